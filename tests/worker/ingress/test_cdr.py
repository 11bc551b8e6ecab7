"""Voicenter CDR interpretation: opt-out detection, whose number, and what is kept for review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from tests.conftest import make_settings
from worker.domain.phones import normalise_own_numbers
from worker.ingress import cdr as cdrs
from worker.pipeline.accept import Event

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def interpret(cdr: dict[str, Any], **overrides: Any) -> Any:
    settings = make_settings(
        **{"voicenter_optout_dtmf": "9", "voicenter_optout_layers": ["optout"], **overrides}
    )
    own = normalise_own_numbers(["0722776772"], "IL")
    return cdrs.interpret(cdrs.decode(cdr), settings, own)


def test_outbound_optout_blocks_the_target() -> None:
    event = interpret(fixture("cdr_outbound.json"))
    assert isinstance(event, Event)
    assert [p.raw for p in event.phones] == ["0501234567"]
    assert event.idempotency_key == "2020072818dcDHFJcc804"
    assert event.context["layer"] == "optout"
    assert event.context["callId"] == "2020072818dcDHFJcc804"
    assert event.occurred_at is not None and int(event.occurred_at.timestamp()) == 1595960350


@pytest.mark.parametrize("time", [0, "0", -62135596800, "", None, "soon"])
def test_a_cdr_time_that_is_no_time_takes_the_time_of_receipt(time: Any) -> None:
    # Issue 13, item 5: a webhook cannot be asked to send again, so an unset clock (epoch 0,
    # .NET's MinValue) or garbage means "now", not 1970 (which would lose to any remove).
    event = interpret({**fixture("cdr_outbound.json"), "time": time})
    assert isinstance(event, Event)
    assert event.occurred_at is None


def test_inbound_queue_optout_blocks_the_caller() -> None:
    event = interpret(fixture("cdr_inbound_queue.json"))
    assert isinstance(event, Event)
    assert [p.raw for p in event.phones] == ["0527654321"]


def test_layers_match_by_id_or_name_and_empty_means_any() -> None:
    cdr = fixture("cdr_outbound.json")
    assert isinstance(interpret(cdr, voicenter_optout_layers=["12"]), Event)
    assert isinstance(interpret(cdr, voicenter_optout_layers=[]), Event)
    assert isinstance(interpret(cdr, voicenter_optout_layers=["main"]), cdrs.Ignored)


def test_other_keys_are_not_optouts() -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["IVR"][1]["Dtmf"] = "3"
    assert isinstance(interpret(cdr), cdrs.Ignored)


def test_no_dtmf_configured_means_no_dtmf_optouts() -> None:
    settings = make_settings()
    assert settings.voicenter_optout_dtmf is None
    cdr = cdrs.decode(fixture("cdr_outbound.json"))
    assert isinstance(cdrs.interpret(cdr, settings, frozenset()), cdrs.Ignored)


def test_custom_data_flag_is_an_optout() -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["IVR"] = []
    cdr["CustomData"] = {"var_optout": "1"}
    event = interpret(cdr, voicenter_optout_customdata={"var_optout": "1"})
    assert isinstance(event, Event)
    assert event.context["custom_data"] == "var_optout"


def test_form_encoded_fields_arrive_as_json_strings() -> None:
    cdr = {k: json.dumps(v) if isinstance(v, list | dict) else str(v)
           for k, v in fixture("cdr_inbound_queue.json").items()}  # fmt: skip
    event = interpret(cdr)
    assert isinstance(event, Event)


def test_an_unknown_call_type_is_kept_for_review_not_guessed() -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["type"] = "Conference"
    review = interpret(cdr)
    assert isinstance(review, cdrs.Review)
    assert review.reason == "unknown_call_type"


def test_an_internal_call_is_kept_for_review() -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["direction"] = "internal"
    assert interpret(cdr).reason == "internal_call"


def test_the_companys_own_number_is_never_the_customer() -> None:
    cdr = fixture("cdr_inbound_queue.json")
    cdr["caller"] = cdr["callerPhone"] = "0722776772"  # an inbound leg from our own DID
    review = interpret(cdr)
    assert isinstance(review, cdrs.Review)
    assert "own_number" in review.detail


def test_a_sip_extension_is_not_a_customer() -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["target"] = "201"
    review = interpret(cdr)
    assert isinstance(review, cdrs.Review)
    assert review.reason == "no_customer_number"


@pytest.mark.parametrize(
    "bad",
    [
        {"caller": "1"},
        {"ivruniqueid": ""},
        {"ivruniqueid": "x", "IVR": "{not json"},
        {"ivruniqueid": "x", "IVR": {"a": 1}},
        {"ivruniqueid": "x", "CustomData": [1]},
    ],
)
def test_unparseable_cdrs(bad: dict[str, Any]) -> None:
    with pytest.raises(cdrs.UnparseableCdrError):
        cdrs.decode(bad)


def test_candidates_are_the_call_types_fields_first_then_every_number_field() -> None:
    settings = make_settings()
    own = normalise_own_numbers(["0722776772"], "IL")
    cdr = fixture("cdr_inbound_queue.json")
    found = cdrs.candidates(cdr, settings, own)
    assert [(c.field, c.phone, c.rejected) for c in found] == [
        ("callerPhone", "+972527654321", None),
        ("caller", "+972527654321", None),
        ("target", None, "too_short"),  # an extension
    ]
    cdr["type"], cdr["caller"] = "Conference", "0722776772"
    assert [(c.field, c.phone, c.rejected) for c in cdrs.candidates(cdr, settings, own)] == [
        ("target", None, "too_short"),
        ("callerPhone", "+972527654321", None),
        ("caller", None, "own_number"),
    ]


class _FullQueue:
    """A store whose review queue is full: keeping a case pushes the oldest out."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, str]] = []

    def count(self, group: str, name: str) -> None:
        self.counted.append((group, name))

    def keep_for_review(
        self, source: str, entry: dict[str, Any], replication: Any = None
    ) -> list[dict[str, Any]]:
        return [{"at": 1, "reason": "internal_call", "cdr": {"ivruniqueid": "oldest-call"}}]


def test_a_case_the_cap_pushes_out_is_logged_as_an_error_with_its_call() -> None:
    review = interpret({**fixture("cdr_outbound.json"), "type": "Conference"})
    with structlog.testing.capture_logs() as events:
        cdrs.book(_FullQueue(), review)  # type: ignore[arg-type]
    (lost,) = [e for e in events if e["event"] == "review_overflowed"]
    assert lost["log_level"] == "error"
    assert (lost["call_id"], lost["reason"]) == ("oldest-call", "internal_call")
