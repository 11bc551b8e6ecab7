"""The review queue: cases listed with their candidates, accepted through accept (dated at the
call, idempotent per call) or dropped, each settled and recorded once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from tests.worker.ingress.test_cdr import fixture
from worker.ingress import cdr as cdrs
from worker.ops import reviews
from worker.ops.reviews import ReviewError
from worker.ops.views import iso
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

#: The outbound fixture's call: 2020-07-28T18:19:10Z.
CALL_TIME_MS = 1595960350 * 1000
REVIEW_SETTINGS = {
    "voicenter_optout_dtmf": "9",
    "voicenter_optout_layers": "optout",
    "own_numbers": "0722776772",
}


@pytest.fixture
def rctx(make_ctx: Any) -> Context:
    return make_ctx(**REVIEW_SETTINGS, admin_token="admin")  # type: ignore[no-any-return]


def keep(ctx: Context, name: str = "cdr_outbound.json", **changes: Any) -> str:
    """Send a CDR through the ingress bookkeeping (as the webhook does) and answer the id of
    the review case it left; `changes` set (None: remove) fields of the fixture."""
    cdr = fixture(name)
    for key, value in changes.items():
        if value is None:
            cdr.pop(key, None)
        else:
            cdr[key] = value
    before = {c.id for c in reviews.kept(ctx)}
    outcome = cdrs.interpret(cdrs.decode(cdr), ctx.settings, ctx.own_numbers)
    assert isinstance(outcome, cdrs.Review), outcome
    assert cdrs.book(ctx.store, outcome) is None
    (new,) = {c.id for c in reviews.kept(ctx)} - before
    return new


def number_audit(ctx: Context, e164: str) -> list[dict[str, Any]]:
    return [e for e in ctx.store.audit(e164) if "ev" in e]


def test_a_case_is_listed_with_why_when_and_the_numbers_found(
    rctx: Context, clock: FakeClock
) -> None:
    first = keep(rctx, type="Conference")
    clock.advance(60)
    second = keep(rctx, direction="internal", ivruniqueid="call-2")

    listed = [reviews.view(rctx, c) for c in reviews.kept(rctx)]

    assert [v["id"] for v in listed] == [first, second]  # oldest first
    assert first.startswith("voicenter-") and first.replace("-", "").isalnum()
    one = listed[0]
    assert one["received_at"] == "2027-01-15T08:00:00Z"
    assert one["reason"] == "unknown_call_type"
    assert one["call_id"] == "2020072818dcDHFJcc804"
    assert one["call_time"] == "2020-07-28T18:19:10Z"
    assert one["call_type"] == "Conference"
    # The caller is the company's own number: shown, but not a number to choose.
    assert one["phones"] == ["+972501234567"]
    assert {"field": "caller", "value": "0722776772", "rejected": "own_number"} in one["candidates"]
    assert listed[1]["reason"] == "internal_call"
    assert reviews.waiting(rctx) == {"voicenter": 2}
    assert reviews.find(rctx, second).entry["cdr"]["ivruniqueid"] == "call-2"


def test_ids_stay_the_same_while_other_cases_come_and_go(rctx: Context) -> None:
    first = keep(rctx, type="Conference")
    second = keep(rctx, type="Conference", ivruniqueid="call-2")
    reviews.drop_review(rctx, first, "cli:dana")
    keep(rctx, type="Conference", ivruniqueid="call-3")
    assert reviews.find(rctx, second).entry["cdr"]["ivruniqueid"] == "call-2"


def settled_entries(rctx: Context) -> list[dict[str, Any]]:
    """The audit entries of settled cases on their way to the archive (no number's)."""
    entries = [json.loads(e.body) for e in rctx.store.pending_audit(1000) if not e.number]
    return [e for e in entries if e.get("act") == "review"]


def test_accept_opts_the_chosen_number_out_dated_at_the_call(
    rctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    case = keep(rctx, type="Conference", caller="0527654321")
    with pytest.raises(ReviewError) as refused:
        reviews.accept_review(rctx, case, None, "cli:dana")  # two candidates: no guess
    assert refused.value.reason == "choose_phone"
    assert "+972501234567" in refused.value.message and "+972527654321" in refused.value.message
    assert rctx.store.ledger("+972501234567") == {}

    done = reviews.accept_review(rctx, case, "0501234567", "cli:dana", "heard it on the call")

    assert done["phone"] == "+972501234567"
    assert done["ledger"] == "applied" and not done["duplicate"]
    assert done["occurred_at"] == "2020-07-28T18:19:10Z"
    ledger = rctx.store.ledger("+972501234567")
    assert ledger["s"] == "blocked" and int(ledger["t"]) == CALL_TIME_MS
    assert ledger["src"] == "voicenter"
    (entry,) = number_audit(rctx, "+972501234567")
    assert entry["ev"] == done["event_id"]
    assert entry["ctx"]["by"] == "cli:dana"
    assert entry["ctx"]["review"] == case
    assert entry["ctx"]["callId"] == "2020072818dcDHFJcc804"
    assert reviews.kept(rctx) == []
    (record,) = rctx.store.reviewed("voicenter")
    assert record["outcome"] == "accepted" and record["by"] == "cli:dana"
    assert record["event_id"] == done["event_id"] and record["note"] == "heard it on the call"
    assert rctx.store.counts_of("review:voicenter") == {"accepted": 1}
    (settled,) = settled_entries(rctx)
    assert (settled["res"], settled["by"], settled["phone"]) == ("accepted", "cli:dana",
                                                                 "+972501234567")  # fmt: skip
    assert settled["ev"] == done["event_id"]
    dispatcher.drain(rctx)
    assert fake_voicenter.pushed() == [["972501234567"]]


def test_the_only_candidate_may_be_accepted_without_naming_it(rctx: Context) -> None:
    case = keep(rctx, type="Conference")  # target only: the caller is our own number
    done = reviews.accept_review(rctx, case, None, "api:dana")
    assert done["phone"] == "+972501234567"
    assert rctx.store.ledger("+972501234567")["s"] == "blocked"


@pytest.mark.parametrize(
    ("phone", "reason"),
    [("201", "too_short"), ("0722776772", "own_number"), ("050abc", "contains_letters")],
)
def test_a_number_that_is_not_a_customers_is_refused(
    rctx: Context, phone: str, reason: str
) -> None:
    case = keep(rctx, type="Conference")
    with pytest.raises(ReviewError) as refused:
        reviews.accept_review(rctx, case, phone, "cli:dana")
    assert refused.value.reason == reason
    assert [c.id for c in reviews.kept(rctx)] == [case]
    assert rctx.store.reviewed("voicenter") == []


def test_a_number_the_cdr_does_not_hold_is_refused_naming_the_candidates(
    rctx: Context,
) -> None:
    # A typo in the chosen number must not opt out a stranger and leave the caller dialable.
    case = keep(rctx, type="Conference", caller="0527654321")
    with pytest.raises(ReviewError) as refused:
        reviews.accept_review(rctx, case, "0561111111", "cli:dana")
    assert refused.value.reason == "not_a_candidate"
    assert "+972561111111" in refused.value.message
    assert "+972501234567" in refused.value.message and "+972527654321" in refused.value.message
    assert rctx.store.ledger("+972561111111") == {}
    assert [c.id for c in reviews.kept(rctx)] == [case]
    assert rctx.store.reviewed("voicenter") == []


def test_a_case_without_a_candidate_can_only_be_dropped(rctx: Context) -> None:
    # The target is too short and the caller is the company's own number: nothing to choose.
    case = keep(rctx, type="Conference", target="201")
    assert reviews.view(rctx, reviews.find(rctx, case))["phones"] == []
    for phone in (None, "0501234567"):
        with pytest.raises(ReviewError) as refused:
            reviews.accept_review(rctx, case, phone, "cli:dana")
        assert refused.value.reason == ("choose_phone" if phone is None else "not_a_candidate")
        assert "/v1/optouts" in refused.value.message
    assert rctx.store.ledger("+972501234567") == {}
    assert [c.id for c in reviews.kept(rctx)] == [case]


def test_a_national_number_is_read_in_the_sources_region(make_ctx: Any) -> None:
    # Voicenter's numbers are British here while the default region is Israel: the number
    # a person types is read as the CDR's were, not as an Israeli one.
    ctx = make_ctx(**REVIEW_SETTINGS, source_regions="voicenter:GB")
    case = keep(ctx, type="Conference", target="07700900123", caller=None)
    assert reviews.view(ctx, reviews.find(ctx, case))["phones"] == ["+447700900123"]
    done = reviews.accept_review(ctx, case, "07700900123", "cli:dana")
    assert done["phone"] == "+447700900123"
    assert ctx.store.ledger("+447700900123")["s"] == "blocked"


def test_an_opt_in_after_the_call_still_wins(
    rctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    # The customer opted out on the call, then opted in again (a later remove) before a
    # person got to the case: accepting the case now must not block the number again.
    case = keep(rctx, type="Conference")
    later = datetime.fromtimestamp(CALL_TIME_MS / 1000 + 3600, tz=UTC)
    accept(rctx, Event("crm", Action.REMOVE, [PhoneInput("+972501234567")], occurred_at=later))

    done = reviews.accept_review(rctx, case, "+972501234567", "cli:dana")

    assert done["ledger"] == "stale"
    assert rctx.store.ledger("+972501234567")["s"] == "unblocked"
    assert reviews.kept(rctx) == []
    dispatcher.drain(rctx)
    assert "972501234567" not in fake_voicenter.blacklist
    assert fake_voicenter.pushed() == []


def test_an_opt_in_before_the_call_does_not_stop_the_opt_out(rctx: Context) -> None:
    case = keep(rctx, type="Conference")
    earlier = datetime.fromtimestamp(CALL_TIME_MS / 1000 - 3600, tz=UTC)
    accept(rctx, Event("crm", Action.REMOVE, [PhoneInput("+972501234567")], occurred_at=earlier))
    assert reviews.accept_review(rctx, case, None, "cli:dana")["ledger"] == "applied"
    assert rctx.store.ledger("+972501234567")["s"] == "blocked"


def test_a_cdr_without_a_time_is_dated_when_it_was_received_not_when_accepted(
    rctx: Context, clock: FakeClock
) -> None:
    received_ms = int(clock.now * 1000)
    case = keep(rctx, type="Conference", time=None)
    clock.advance(3 * 86400)
    reviews.accept_review(rctx, case, None, "cli:dana")
    assert int(rctx.store.ledger("+972501234567")["t"]) == received_ms


def test_a_call_time_ahead_of_the_receipt_is_capped_at_receipt_plus_the_clock_skew(
    rctx: Context, clock: FakeClock
) -> None:
    # A CDR dated ten days ahead (the PBX clock is wrong), accepted three days later: an
    # opt-out dated ten days ahead would make every real event until then look stale.
    received_ms = int(clock.now * 1000)
    skew_ms = int(rctx.settings.clock_skew_seconds * 1000)
    case = keep(rctx, type="Conference", time=int(clock.now) + 10 * 86400)
    clock.advance(3 * 86400)

    done = reviews.accept_review(rctx, case, None, "cli:dana")

    assert int(rctx.store.ledger("+972501234567")["t"]) == received_ms + skew_ms
    assert done["occurred_at"] == iso(received_ms + skew_ms)
    # The customer opted in again a day after the call: that later event wins.
    later = datetime.fromtimestamp(received_ms / 1000 + 86400, tz=UTC)
    remove = Event("crm", Action.REMOVE, [PhoneInput("+972501234567")], occurred_at=later)
    assert accept(rctx, remove).phones[0].ledger == "applied"
    assert rctx.store.ledger("+972501234567")["s"] == "unblocked"


def test_a_call_time_within_the_clock_skew_is_kept(rctx: Context, clock: FakeClock) -> None:
    received_s = int(clock.now)
    case = keep(rctx, type="Conference", time=received_s + 60)
    clock.advance(86400)
    reviews.accept_review(rctx, case, None, "cli:dana")
    assert int(rctx.store.ledger("+972501234567")["t"]) == (received_s + 60) * 1000


def test_a_crash_between_the_opt_out_and_settling_leaves_one_opt_out(
    rctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = keep(rctx, type="Conference")

    def crash(*_: Any, **__: Any) -> bool:
        raise ConnectionError("the process died here")

    with monkeypatch.context() as patched:
        patched.setattr(rctx.store, "settle_review", crash)
        with pytest.raises(ConnectionError):
            reviews.accept_review(rctx, case, "0501234567", "cli:dana")
    assert [c.id for c in reviews.kept(rctx)] == [case]  # the case is still there
    first = rctx.store.ledger("+972501234567")

    again = reviews.accept_review(rctx, case, "0501234567", "cli:omer")

    assert again["duplicate"] and again["ledger"] is None
    assert rctx.store.ledger("+972501234567") == first  # no second version
    assert len(number_audit(rctx, "+972501234567")) == 1
    assert reviews.kept(rctx) == []
    (record,) = rctx.store.reviewed("voicenter")
    assert record["event_id"] == again["event_id"] == first["e"]
    with pytest.raises(ReviewError) as gone:
        reviews.accept_review(rctx, case, "0501234567", "cli:omer")
    assert gone.value.reason == "not_found"


def test_a_call_kept_twice_is_opted_out_once(rctx: Context, clock: FakeClock) -> None:
    # Voicenter sends a CDR again when it did not hear our answer: both copies are kept.
    first = keep(rctx, type="Conference", caller="0527654321")
    clock.advance(30)
    second = keep(rctx, type="Conference", caller="0527654321")
    assert first != second
    done = reviews.accept_review(rctx, first, "0501234567", "cli:dana")

    with pytest.raises(ReviewError) as other:
        reviews.accept_review(rctx, second, "0527654321", "cli:omer")
    assert other.value.reason == "accepted_for_another_number"
    assert rctx.store.ledger("+972527654321") == {}

    same = reviews.accept_review(rctx, second, "0501234567", "cli:omer")
    assert same["duplicate"] and same["event_id"] == done["event_id"]
    assert len(number_audit(rctx, "+972501234567")) == 1
    assert reviews.kept(rctx) == []


def test_drop_takes_the_case_off_and_records_who_and_why(rctx: Context) -> None:
    case = keep(rctx, direction="internal")
    assert reviews.drop_review(rctx, case, "cli:dana", "a test call") == {
        "id": case,
        "dropped": True,
    }
    assert reviews.kept(rctx) == []
    (record,) = rctx.store.reviewed("voicenter")
    assert record["outcome"] == "dropped"
    assert (record["by"], record["note"], record["reason"]) == ("cli:dana", "a test call",
                                                                 "internal_call")  # fmt: skip
    assert record["call_id"] == "2020072818dcDHFJcc804"
    assert rctx.store.counts_of("review:voicenter") == {"dropped": 1}
    assert rctx.store.ledger("+972501234567") == {}
    # on its way to the archive, as evidence of who dropped it and why
    (settled,) = settled_entries(rctx)
    assert settled["act"] == "review" and settled["res"] == "dropped"
    assert (settled["src"], settled["review"], settled["by"]) == ("voicenter", case, "cli:dana")
    assert (settled["rsn"], settled["note"]) == ("internal_call", "a test call")
    with pytest.raises(ReviewError) as again:
        reviews.drop_review(rctx, case, "cli:dana")
    assert again.value.reason == "not_found"
    assert rctx.store.counts_of("review:voicenter") == {"dropped": 1}


@pytest.mark.parametrize("review_id", ["voicenter-000000000000", "nope", "", "other-1"])
def test_an_unknown_id_is_not_found(rctx: Context, review_id: str) -> None:
    keep(rctx, type="Conference")
    for action in (
        lambda: reviews.accept_review(rctx, review_id, "0501234567", "cli:dana"),
        lambda: reviews.drop_review(rctx, review_id, "cli:dana"),
    ):
        with pytest.raises(ReviewError) as refused:
            action()
        assert refused.value.reason == "not_found"
    assert len(reviews.kept(rctx)) == 1
