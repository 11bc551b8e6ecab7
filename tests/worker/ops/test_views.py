"""The documented shape: words for the scripts' short keys, ISO times, nothing dropped."""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from worker.ops.views import (
    DEAD_LETTER_EXAMPLE,
    NUMBER_EXAMPLE,
    TIMES,
    WORDS,
    dead_letter,
    iso,
    number_view,
    words,
)
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def test_times_are_iso_8601_utc() -> None:
    assert iso(1_796_342_400_000) == "2026-12-04T00:00:00Z"
    assert iso(1_796_342_400_123) == "2026-12-04T00:00:00.123Z"
    assert iso(None) is None
    assert iso(0) is None


def test_every_short_key_is_shown_as_its_word() -> None:
    raw = {"at": 1_796_342_400_000, "ev": "e1", "src": "crm", "act": "add", "rsn": "asked",
           "t": 1_796_342_399_000, "x": 1_796_400_000_000, "ctx": {"call": "c1"},
           "na": ["weya"], "res": "applied", "v": 3, "prov": "phonely:agent1", "out": "done",
           "det": "ok", "n": 2, "rs": "crm\napi", "by": "cli:dana"}  # fmt: skip
    assert words(raw) == {
        "at": "2026-12-04T00:00:00Z", "event_id": "e1", "source": "crm", "action": "add",
        "reason": "asked", "event_time": "2026-12-03T23:59:59Z",
        "expires_at": "2026-12-04T16:00:00Z", "context": {"call": "c1"},
        "not_applicable": ["weya"], "result": "applied", "version": 3,
        "target": "phonely:agent1", "outcome": "done", "detail": "ok", "attempts": 2,
        "sources": ["crm", "api"], "by": "cli:dana",
    }  # fmt: skip
    assert set(WORDS) <= set(raw)  # every key the module knows is exercised here


def test_an_expiry_of_0_is_none_not_1970() -> None:
    assert words({"x": 0})["expires_at"] is None


def test_unknown_keys_pass_through_under_their_own_name() -> None:
    shown = words({"act": "add", "zz": [1, 2], "first_at": 1_796_342_400_000})
    assert shown == {"action": "add", "zz": [1, 2], "first_at": "2026-12-04T00:00:00Z"}


def test_an_unknown_key_a_word_took_is_kept_not_overwritten() -> None:
    shown = words({"act": "add", "action": "something newer"})
    assert shown == {"action": "add", "raw_action": "something newer"}


def test_a_dead_letter_shows_its_id_as_operators_write_it() -> None:
    stored = {"id": "phonely:agent1|+972501234567", "version": "4",
              "first_at": 1_796_342_400_000, "last_at": 1_796_342_400_123,
              "replayed_at": 1_796_342_401_000, "extra": "kept"}  # fmt: skip
    assert dead_letter(stored) == {
        "id": "phonely:agent1:+972501234567", "version": 4, "first_at": "2026-12-04T00:00:00Z",
        "last_at": "2026-12-04T00:00:00.123Z", "replayed_at": "2026-12-04T00:00:01Z",
        "extra": "kept",
    }  # fmt: skip


def test_a_number_view_has_the_documented_shape(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    fake_voicenter.permanent.add("972501111111")
    phones = [PhoneInput("0501111111"), PhoneInput("0501111112")]
    accept(ctx, Event("crm", Action.ADD, phones, reason="asked"))
    dispatcher.drain(ctx)
    dead, done = number_view(ctx, "+972501111111"), number_view(ctx, "+972501111112")

    for view in (dead, done):
        assert set(view) == set(NUMBER_EXAMPLE)
        row, documented = view["providers"]["voicenter"], NUMBER_EXAMPLE["providers"]["voicenter"]
        assert set(row) == set(documented)
        shapes = {tuple(sorted(entry)) for entry in NUMBER_EXAMPLE["audit"]}
        assert {tuple(sorted(entry)) for entry in view["audit"]} == shapes
        _no_short_keys_nor_epoch_ms(view)
    assert ISO.match(done["event_time"])
    # The last answer stays only while it is a failure; a success is in the trail.
    assert done["providers"]["voicenter"]["last_answer"] is None
    failed = dead["providers"]["voicenter"]["last_answer"]
    assert set(failed) == set(NUMBER_EXAMPLE["providers"]["phonely:agent1"]["last_answer"])
    assert failed["outcome"] == "dead"
    assert [a.get("result") or a.get("outcome") for a in done["audit"]] == ["done", "applied"]
    letter = dead["providers"]["voicenter"]["dead_letter"]
    assert set(letter) == set(DEAD_LETTER_EXAMPLE)
    assert letter["id"] == "voicenter:+972501111111"
    assert ISO.match(letter["first_at"])


def _no_short_keys_nor_epoch_ms(value: Any, field: str = "") -> None:
    """Keys are words (no script's short key, nothing in ms) and times ISO."""
    if isinstance(value, dict):
        for key, inner in value.items():
            assert key not in WORDS, key
            assert not key.endswith("_ms"), key
            _no_short_keys_nor_epoch_ms(inner, key)
    elif isinstance(value, list):
        for inner in value:
            _no_short_keys_nor_epoch_ms(inner, field)
    elif field in TIMES and value is not None:
        assert ISO.match(value), (field, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        assert value < 10**11, (field, value)  # no epoch ms left under another name
