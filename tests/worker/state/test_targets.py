"""register.lua, cursor.lua, stage_many.lua and reconcile.lua on a real Redis: announcing
targets and routes, the directory, catching a target up, repairing what it holds."""

from __future__ import annotations

import pytest

from tests.conftest import FakeClock
from tests.worker.state.scene import (
    N1,
    N2,
    N3,
    OPTIONS,
    VOICENTER,
    accept,
    all_done,
    lease,
    live,
    staged,
)
from worker.providers.base import Action
from worker.state.records import LiveTarget, Registered, Repaired, Staged, Tally
from worker.state.store import Store
from worker.state.targets import Announced, CatchUp, scan_fraction

PHONELY = {"provider": "phonely", "add_only": False, "max_batch": 50}


def test_a_target_becomes_live_and_is_caught_up_only_when_the_ledger_holds_something(
    store: Store, clock: FakeClock
) -> None:
    assert store.register_targets({"voicenter": VOICENTER}, 60) == Registered(
        [LiveTarget("voicenter", False)], None
    )
    assert store.backfills() == {}
    assert store.register_targets({"voicenter": VOICENTER}, 60) == Registered([], None)
    accept(store, Action.ADD, N1)
    registered = store.register_targets({"phonely:1": PHONELY}, 60)
    assert registered == Registered([LiveTarget("phonely:1", True)], None)
    assert store.backfills() == {"phonely:1": "b:0@1!"}  # never confirmed anything: "!"
    assert store.directory() == {"voicenter": VOICENTER, "phonely:1": PHONELY}
    clock.advance(61)  # no process announced them again within their TTL
    assert store.directory() == {}
    assert store.known_targets() == ["phonely:1", "voicenter"]
    back = store.register_targets({"voicenter": VOICENTER}, 60)
    assert back == Registered([LiveTarget("voicenter", True)], None)


def test_a_target_confirmed_anything_before_is_caught_up_over_the_ledger_too(
    store: Store, clock: FakeClock
) -> None:
    """The ledger pass finds what the target was confirmed to hold whose state moved since:
    a target never confirmed anything skips it ('!'); once it has been, it never does."""
    accept(store, Action.ADD, N1)
    store.register_targets({"phonely:1": PHONELY}, 60)
    assert store.backfills() == {"phonely:1": "b:0@1!"}
    store.stage_many("phonely:1", [N1])
    chunk = lease(store, target="phonely:1")
    store.complete(chunk, all_done(chunk), OPTIONS)
    clock.advance(61)  # it lapses, and comes back
    assert store.register_targets({"phonely:1": PHONELY}, 60).live == [
        LiveTarget("phonely:1", True)
    ]
    assert store.backfills() == {"phonely:1": "b:0@2"}
    assert not CatchUp.read("b:0@2").blocked_only and CatchUp.read("b:0@1!").blocked_only


@pytest.mark.parametrize("ends", ["completed late", "recovered"])
def test_a_new_targets_push_in_flight_across_a_lapse_is_set_right_without_a_ledger_pass(
    store: Store, clock: FakeClock, ends: str
) -> None:
    """Review of the skipped ledger pass: the one way a target with no code can hold a
    number of ours is a push in flight (its worker died) while it lapses and the number is
    removed; it comes back with '!', and the push's completion or recovery stages the
    remove, since the ledger pass would not."""
    live(store)
    store.register_targets({"phonely:1": PHONELY}, 60)
    accept(store, Action.ADD, N2)  # new to the ledger: staged for both, no code needed
    chunk = lease(store, target="phonely:1")  # pushed; its worker dies
    clock.advance(61)  # phonely:1 lapses
    accept(store, Action.REMOVE, N2)
    accept(store, Action.ADD, N1)  # something blocked: a catch-up to make
    store.register_targets({"phonely:1": PHONELY}, 60)  # back, as a target never confirmed
    assert store.backfills()["phonely:1"].endswith("!")
    if ends == "completed late":
        store.complete(chunk, all_done(chunk), OPTIONS)
    else:
        clock.advance(60)
        assert store.release(chunk.id, recover=True, late_ms=90_000).status == "ok"
    assert staged(store, "phonely:1", Action.REMOVE) == [N2]


def test_routes_announced_new_then_changed_catch_every_live_target_up(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    routes = {"sms": {"include": ["voodoosms", "phonely"], "exclude": []}}
    assert store.register_targets({}, 60, routes).routes == "new"
    assert store.announced_routes() == {"sms": {"exclude": [], "include": ["phonely", "voodoosms"]}}
    assert store.backfills() == {"voicenter": "b:0@1!"}
    # the same routes in another order are the same announcement
    same = {"sms": {"exclude": [], "include": ["phonely", "voodoosms"]}}
    assert store.register_targets({}, 60, same).routes is None
    assert store.register_targets({}, 60, None).routes is None  # left as they are
    assert store.register_targets({}, 60, {}).routes == "changed"
    assert store.backfills() == {"voicenter": "b:0@2!"}
    assert store.announced_routes() == {}


def test_a_catch_up_cursor_moves_on_only_from_the_cursor_its_step_read(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    store.register_targets({"phonely:1": PHONELY}, 60)
    assert store.advance_backfill("phonely:1", "b:0@1!", "c:0@1") is True
    assert store.backfills() == {"phonely:1": "c:0@1"}
    # a step of an earlier catch-up (the target lapsed and came back meanwhile)
    assert store.advance_backfill("phonely:1", "b:0@0", None) is False
    assert store.backfills() == {"phonely:1": "c:0@1"}
    assert store.advance_backfill("phonely:1", "c:0@1", None) is True
    assert store.backfills() == {}


def test_a_catch_up_step_stages_what_the_target_lacks_and_nothing_it_holds(store: Store) -> None:
    accept(store, Action.ADD, N1, N2, N3)  # before any target was live
    live(store)
    store.redis.hset(store.key("confirmed", "voicenter"), N2, "blocked:1")
    store.redis.zadd(store.key("retry"), {f"voicenter|{N3}": store.now_ms() + 1000})
    position, page = store.blocked_page("0", 100)
    assert (position, sorted(page)) == ("0", [N1, N2, N3])
    caught_up = store.stage_many("voicenter", [N1, N2, N3])
    assert caught_up == Tally(1, [Staged("voicenter", Action.ADD, 1, 0, 0)])
    assert staged(store) == [N1]
    # A SCAN of the whole database: as many pages as the table, which other tests' keys
    # may have grown, takes.
    position, held = "0", []
    while True:
        position, page = store.confirmed_page("voicenter", position, 100)
        held += page
        if position == "0":
            break
    assert held == [N2]


def test_a_repair_pushes_missing_numbers_again_and_removes_extras_unless_blocked_now(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    store.complete(chunk, all_done(chunk), OPTIONS)
    assert store.repair("voicenter", [N1], "missing", "reconcile") == Repaired(
        1, 0, [Staged("voicenter", Action.ADD, 1, 0, 0)]
    )
    assert store.confirmation("voicenter", N1) == "?"
    # an extra the ledger blocks now stays; one it never held gets a versioned remove
    repaired = store.repair("voicenter", [N1, N2], "extra", "reconcile")
    assert repaired == Repaired(1, 1, [Staged("voicenter", Action.REMOVE, 1, 0, 0)])
    ledger = store.ledger(N2)
    assert (ledger["s"], ledger["v"], ledger["e"], ledger["src"]) == (
        "unblocked", "1", "reconcile", "reconcile"
    )  # fmt: skip
    assert store.audit(N2)[0]["res"] == "extra"
    assert staged(store, action=Action.REMOVE) == [N2]


def test_announced_holds_every_target_ever_announced_with_its_provider_and_liveness(
    store: Store, clock: FakeClock
) -> None:
    store.register_targets({"phonely:1": PHONELY}, 60)
    clock.advance(61)  # the process that had Phonely has gone
    store.register_targets({"voicenter": VOICENTER}, 60)

    assert store.announced() == {
        "phonely:1": Announced("phonely", live=False),
        "voicenter": Announced("voicenter", live=True),
    }


def test_a_catch_ups_cursor_reads_as_its_pass_and_how_far_through_it() -> None:
    assert CatchUp.read("b:0@3") == CatchUp("b", "0", "@3")
    assert CatchUp.read("b:k8192@3").fraction() == 0.25
    assert CatchUp.read("b:k8192@3").stage == "blocked"
    assert CatchUp.read("b:4711@3").fraction() is None  # the one set of before, first
    assert CatchUp.read("k:0@3").stage == "ledger"
    assert CatchUp.read("c:98304@3") == CatchUp("k", "0", "@3")  # starts that pass over
    assert CatchUp.read("b:k1").generation == ""  # a cursor from before generations


def test_a_scan_cursor_says_how_much_of_the_keyspace_is_behind_it(store: Store) -> None:
    # The share is of the whole table, whatever else it holds: of this test's own keys,
    # spread over it by their hashes, about as many are behind the cursor.
    pipe = store.redis.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(store.key("k", str(i)), 1)
    pipe.execute()
    cursor, seen = 0, 0
    while True:
        cursor, keys = store.redis.scan(cursor, match=store.key("k", "*"), count=500)
        seen += len(keys)
        if cursor == 0:
            break
        assert scan_fraction(cursor) == pytest.approx(seen / 5000, abs=0.05)
    assert seen == 5000
