"""slot.lua, hold.lua and turn.lua on a real Redis, and the pauses and circuits read back."""

from __future__ import annotations

from tests.conftest import FakeClock
from worker.state.store import Store

TAKE = {"rps": 0.0, "concurrency": 1, "lease_seconds": 10.0}


def test_a_slot_is_taken_waited_for_or_refused_while_the_provider_is_held(
    store: Store, clock: FakeClock
) -> None:
    assert store.acquire_slot("p", "a", **TAKE) == 0  # type: ignore[arg-type]
    wait = store.acquire_slot("p", "b", **TAKE)  # type: ignore[arg-type]
    assert 5 <= wait <= 50  # ms until a lease may free one, bounded
    store.give_back_slots([("p", "a")])
    assert store.acquire_slot("p", "b", **TAKE) == 0  # type: ignore[arg-type]
    store.hold("p", 3)
    assert store.acquire_slot("p", "c", **TAKE) == -3000  # type: ignore[arg-type]
    clock.advance(3)
    store.give_back_slots([("p", "b")])
    assert store.acquire_slot("p", "c", **TAKE) == 0  # type: ignore[arg-type]


def test_the_later_hold_wins(store: Store, clock: FakeClock) -> None:
    store.hold("p", 30)
    store.hold("p", 10)  # never cuts a longer one short
    assert store.held_for("p") == 30.0
    clock.advance(20)
    assert store.held_for("p") == 10.0
    store.hold("p", 60)
    assert store.held_for("p") == 60.0
    assert store.held_for("other") == 0.0


def test_a_pause_is_kept_until_resumed(store: Store) -> None:
    store.pause("p", "auth", "P_TOKEN", "401 Unauthorized")
    assert store.paused() == {
        "p": {
            "reason": "auth",
            "setting": "P_TOKEN",
            "detail": "401 Unauthorized",
            "at": store.now_ms(),
        }
    }
    assert store.resume("p") is True
    assert store.resume("p") is False
    assert store.paused() == {}


def test_a_turn_is_given_back_only_by_its_own_run(store: Store) -> None:
    token = store.take_turn("sweep", 5)
    assert token is not None
    assert store.take_turn("sweep", 5) is None
    store.give_turn_back("sweep", "another run's token")
    assert store.take_turn("sweep", 5) is None
    store.give_turn_back("sweep", token)
    assert store.take_turn("sweep", 5) is not None
