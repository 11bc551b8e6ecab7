"""replay.lua and purge.lua on a real Redis, and the dead letters read back."""

from __future__ import annotations

from typing import Any

from tests.conftest import FakeClock
from tests.worker.state.scene import (
    N1,
    N2,
    OPTIONS,
    accept,
    answer,
    dead_letter,
    hget,
    lease,
    live,
    staged,
)
from worker.providers.base import Action
from worker.state.records import Staged, Tally
from worker.state.store import Store


def _dead(store: Store, *numbers: str) -> None:
    chunk = lease(store)
    store.complete(chunk, {n: answer("permanent", "bad_format") for n in numbers}, OPTIONS)


def test_dead_letters_are_listed_oldest_first_and_counted(store: Store, clock: FakeClock) -> None:
    live(store)
    accept(store, Action.ADD, N2)
    _dead(store, N2)
    clock.advance(1)
    accept(store, Action.ADD, N1)
    _dead(store, N1)
    assert [d["phone"] for d in store.dead_letters()] == [N2, N1]
    assert store.dead_letter_counts() == {"voicenter": 2}
    assert store.oldest_dead_letter_ms() == store.now_ms() - 1000


def test_a_replay_stages_the_number_again_once_however_often_it_is_replayed(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    _dead(store, N1)
    member = f"voicenter|{N1}"
    assert store.replay([member], "ops") == Tally(1, [Staged("voicenter", Action.ADD, 1, 0, 0)])
    assert store.replay([member, "voicenter|+0"], "ops") == Tally(
        1, [Staged("voicenter", Action.ADD, 1, 1, 0)]
    )  # the unknown one is skipped
    assert staged(store) == [N1]
    entry = dead_letter(store, N1)
    assert entry is not None
    assert (entry["replays"], entry["replayed_at"]) == (2, store.now_ms())
    assert _without_id(store.audit(N1)[0]) == {
        "at": store.now_ms(), "act": "replay", "prov": "voicenter", "by": "ops",
        "rsn": "bad_format", "res": "staged",
    }  # fmt: skip
    # it leaves the store only when a push succeeds
    chunk = lease(store)
    store.complete(chunk, {N1: answer("done")}, OPTIONS)
    assert store.dead_letters() == []


def test_a_replay_for_a_target_not_live_waits_and_counts_nothing(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    _dead(store, N1)
    clock.advance(3601)
    assert store.replay([f"voicenter|{N1}"], "ops") == Tally(0, [])
    assert store.audit(N1)[0]["res"] == "target_not_live"
    assert dead_letter(store, N1) is not None
    assert (dead_letter(store, N1) or {}).get("replays") == 0


def test_a_replay_with_nothing_left_to_push_drops_the_dead_letter(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    _dead(store, N1)
    # the target holds what the ledger says now (as after a reconciliation)
    store.redis.hset(store.key("confirmed", "voicenter"), N1, "blocked:1")
    assert store.replay([f"voicenter|{N1}"], "ops") == Tally(1, [])
    assert store.dead_letters() == []
    assert store.oldest_dead_letter_ms() is None
    assert store.audit(N1)[0]["res"] == "nothing_to_push"


def test_a_purge_drops_the_entry_leaves_an_audit_line_and_a_spent_late_mark_goes(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    _dead(store, N1, N2)
    store.redis.hset(
        store.key("late", "voicenter"), mapping={N1: store.now_ms() - 1, N2: store.now_ms() + 5000}
    )
    members = [f"voicenter|{N1}", f"voicenter|{N2}", "voicenter|+0"]
    assert store.purge(members, "ops") == 2
    assert store.dead_letters() == []
    assert store.redis.zcard(store.key("dlq:age")) == 0
    assert _without_id(store.audit(N1)[0]) == {
        "at": store.now_ms(), "act": "purge", "prov": "voicenter", "by": "ops", "rsn": "bad_format",
    }  # fmt: skip
    assert hget(store, "late:voicenter", N1) is None  # passed: nothing would clear it
    assert hget(store, "late:voicenter", N2) is not None  # still running: the next push's
    assert store.purge(members, "ops") == 0


def _without_id(entry: dict[str, Any]) -> dict[str, Any]:
    """A tail entry without its stream id (what the archive keys it by: a real id)."""
    assert "-" in entry["id"]
    return {k: v for k, v in entry.items() if k != "id"}
