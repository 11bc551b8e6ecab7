"""accept.lua, expire.lua, adopt.lua and move.lua on a real Redis: what each answers and what
it leaves in the ledger (each target's confirmation among it), the audit trail, the blocked
set, the expiry index and the batches."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from tests.conftest import FakeClock
from tests.worker.state.scene import (
    N1,
    N2,
    N3,
    OPTIONS,
    VOICENTER,
    WEYA,
    accept,
    all_done,
    event,
    lease,
    live,
    staged,
)
from worker.providers.base import Action
from worker.state.codec import ledger_blocks
from worker.state.ledger import blocked_bucket
from worker.state.records import AcceptOutcome, Staged, Tally
from worker.state.store import Store

ROUTE = {"include": [], "exclude": [], "call": False}


def test_a_new_add_blocks_audits_records_its_key_and_stages_it(store: Store) -> None:
    live(store)
    ev = event(store, Action.ADD, ago_ms=5000)
    outcome = store.accept(ev, [(N1, "Dana")], ROUTE, 3600)
    assert outcome == AcceptOutcome(
        status="ok",
        event_id=ev["id"],
        results=["applied"],
        staged=[Staged("voicenter", Action.ADD, count=1, before=0, in_flight=0)],
    )
    assert outcome.staged[0].opened  # this event started the batch's linger
    now = store.now_ms()
    # No expiry (x) and no remove yet (rt) are no fields: readers take 0 and -1.
    assert store.ledger(N1) == {
        "s": "blocked", "v": "1", "u": str(now), "t": str(ev["t"]),
        "bl": "=", "rs": "api",
        "e": ev["id"], "src": "api", "r": "asked", "n": "Dana",
    }  # fmt: skip
    assert store.blocked_among([N1, N2]) == {N1}
    assert store.redis.zscore(store.key("expiry"), N1) is None  # permanent
    (entry,) = store.audit(N1)
    assert (entry["ev"], entry["act"], entry["res"], entry["v"]) == (ev["id"], "add", "applied", 1)
    assert store.redis.get(store.key("idem", "api", ev["key"])) == f"body|{ev['id']}".encode()
    assert 0 < store.redis.ttl(store.key("idem", "api", ev["key"])) <= 3600
    assert staged(store) == [N1]


def test_a_repeated_key_is_a_duplicate_and_another_body_under_it_a_conflict(
    store: Store,
) -> None:
    live(store)
    first = event(store, Action.ADD, key="k1")
    store.accept(first, [(N1, "")], ROUTE, 3600)
    again = {**event(store, Action.ADD, key="k1"), "hash": first["hash"]}
    assert store.accept(again, [(N1, "")], ROUTE, 3600) == AcceptOutcome("duplicate", first["id"])
    other = {**event(store, Action.REMOVE, key="k1"), "hash": "another body"}
    assert store.accept(other, [(N1, "")], ROUTE, 3600) == AcceptOutcome("conflict", first["id"])
    assert store.ledger(N1)["s"] == "blocked"
    assert len(store.audit(N1)) == 1  # neither wrote anything
    # force: taken as a new event whatever its key says
    forced = store.accept(other, [(N1, "")], ROUTE, 3600, force=True)
    assert (forced.status, forced.event_id) == ("ok", other["id"])


def test_an_event_that_fails_partway_leaves_its_key_unrecorded_so_its_retry_writes_the_rest(
    store: Store,
) -> None:
    """Found by review: the key was recorded before the numbers, and Redis keeps what a
    failing script wrote; an old release's script failing on a ledger it cannot read (or a
    write refused for memory) answered the retry as a duplicate, the rest never written."""
    live(store)
    store.redis.hset(store.key("num", N2), mapping={"s": "blocked", "v": "1", "bl": "{nope"})
    first = event(store, Action.ADD, key="k1")
    with pytest.raises(redis.ResponseError):
        store.accept(first, [(N1, ""), (N2, ""), (N3, "")], ROUTE, 3600)
    assert store.ledger(N1)["s"] == "blocked"  # written before the failure, and kept
    # reserved, not recorded complete
    assert store.redis.get(store.key("idem", "api", "k1")) == f"body|{first['id']}|p".encode()
    store.redis.delete(store.key("num", N2))  # whatever failed is mended
    retry = {**event(store, Action.ADD, key="k1"), "hash": first["hash"]}
    done = store.accept(retry, [(N1, ""), (N2, ""), (N3, "")], ROUTE, 3600)
    assert (done.status, done.event_id) == ("ok", first["id"])  # finished under its first id
    assert [store.ledger(n)["s"] for n in (N1, N2, N3)] == ["blocked"] * 3
    assert {store.ledger(n)["e"] for n in (N1, N2, N3)} == {first["id"]}
    assert store.redis.get(store.key("idem", "api", "k1")) == f"body|{first['id']}".encode()


def test_a_reserved_large_event_is_finished_under_its_first_id_by_a_retry(store: Store) -> None:
    live(store)
    first = event(store, Action.ADD, key="big")
    assert store.accept(first, [(N1, "")], ROUTE, 3600, "reserve").status == "ok"
    assert store.redis.get(store.key("idem", "api", "big")) == f"body|{first['id']}|p".encode()
    # the retry of an event whose parts were not all written finds the reservation
    retry = {**event(store, Action.ADD, key="big"), "hash": first["hash"]}
    done = store.accept(retry, [(N2, "")], ROUTE, 3600)
    assert (done.status, done.event_id) == ("ok", first["id"])
    assert store.ledger(N2)["e"] == first["id"]
    assert store.redis.get(store.key("idem", "api", "big")) == f"body|{first['id']}".encode()


def test_a_remove_older_than_the_add_is_stale_and_an_add_older_than_a_remove_too(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, ago_ms=1000)
    assert accept(store, Action.REMOVE, N1, ago_ms=2000) == ["stale"]
    assert store.ledger(N1)["s"] == "blocked"
    assert store.ledger(N1)["v"] == "1"
    # on a tie the add wins
    assert accept(store, Action.REMOVE, N1, ago_ms=1000) == ["stale"]
    assert accept(store, Action.REMOVE, N1, ago_ms=500) == ["applied"]
    assert store.ledger(N1)["s"] == "unblocked"
    assert store.ledger(N1)["v"] == "2"
    assert store.blocked_among([N1]) == set()
    assert accept(store, Action.ADD, N1, ago_ms=700) == ["stale"]
    assert store.ledger(N1)["v"] == "2"
    assert staged(store, action=Action.REMOVE) == [N1]
    assert staged(store) == []  # the remove took the add's place in staging


def test_a_longer_block_extends_and_the_same_again_changes_nothing(store: Store) -> None:
    live(store)
    assert accept(store, Action.ADD, N1, expires_in_ms=60_000) == ["applied"]
    assert store.redis.zscore(store.key("expiry"), N1) == store.now_ms() + 60_000
    assert accept(store, Action.ADD, N1, expires_in_ms=120_000) == ["extended"]
    assert store.ledger(N1)["x"] == str(store.now_ms() + 120_000)
    assert store.ledger(N1)["v"] == "2"
    assert accept(store, Action.ADD, N1, ago_ms=2000, expires_in_ms=30_000) == ["unchanged"]
    assert store.ledger(N1)["v"] == "2"
    assert accept(store, Action.ADD, N1) == ["extended"]  # permanent from now on
    assert store.redis.zscore(store.key("expiry"), N1) is None


def test_an_event_stages_only_for_live_targets_and_names_those_it_cannot_reach(
    store: Store,
) -> None:
    outcome = store.accept(event(store, Action.ADD), [(N1, "")], ROUTE, 3600)
    assert (outcome.results, outcome.staged) == (["applied"], [])  # none live: ledger only
    live(store, voicenter=VOICENTER, weya=WEYA)
    outcome = store.accept(event(store, Action.ADD), [(N2, "")], ROUTE, 3600)
    # Weya needs a call record this event lacks: not staged there, named in the audit
    assert outcome.staged == [Staged("voicenter", Action.ADD, 1, 0, 0)]
    assert store.audit(N2)[0]["na"] == ["weya"]
    excluded = {"include": [], "exclude": ["voicenter"], "call": False}
    n3 = "+972501000003"
    assert store.accept(event(store, Action.ADD), [(n3, "")], excluded, 3600).staged == []


def test_a_second_number_in_the_batch_reports_the_size_before_it(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    outcome = store.accept(event(store, Action.ADD), [(N2, "")], ROUTE, 3600)
    (batch,) = outcome.staged
    assert (batch.count, batch.before, batch.opened) == (2, 1, False)
    assert batch.filled(2) and not batch.filled(3)


def test_an_expired_block_is_lifted_as_a_new_version_and_staged_for_removal(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, expires_in_ms=10_000)
    lease(store)  # the add is in flight when its block ends
    assert store.expire_due() == Tally(0, [])  # not yet
    clock.advance(10)
    expired = store.expire_due()
    assert expired.count == 1
    # in flight: the completion of the add stages the remove (restage skips it now)
    assert expired.staged == []
    ledger = store.ledger(N1)
    assert (ledger["s"], ledger["v"], ledger["xr"], ledger["e"]) == (
        "unblocked", "2", "1", "expiry"
    )  # fmt: skip
    assert store.blocked_among([N1]) == set()
    assert store.redis.zscore(store.key("expiry"), N1) is None
    assert store.audit(N1)[0]["res"] == "applied"
    assert store.audit(N1)[0]["act"] == "expire"
    assert store.expire_due() == Tally(0, [])  # once


def test_an_expiry_stages_the_remove_for_a_target_not_pushing_the_number(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, expires_in_ms=10_000)
    clock.advance(11)
    expired = store.expire_due()
    assert expired == Tally(1, [Staged("voicenter", Action.REMOVE, 1, 0, 0)])
    assert staged(store) == []
    assert staged(store, action=Action.REMOVE) == [N1]


def test_one_sources_block_ending_under_anothers_narrows_the_sources_only(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, source="sms", expires_in_ms=10_000)
    accept(store, Action.ADD, N1, source="crm")
    assert store.ledger_sources([N1]) == [["sms", "crm"]]
    assert store.blocked_until([N1], store.now_ms() + 20_000, "sms") == set()
    assert store.blocked_until([N1], store.now_ms() + 5_000, "sms") == {N1}
    assert store.blocked_until([N1], 0, "crm") == {N1}
    clock.advance(11)
    assert store.expire_due().count == 0
    ledger = store.ledger(N1)
    assert (ledger["s"], ledger["v"], ledger["rs"]) == ("blocked", "2", "crm")
    assert store.audit(N1)[0]["res"] == "narrowed"
    assert store.blocked_until([N1], store.now_ms(), "sms") == set()


def test_the_adoption_pass_gives_a_legacy_block_the_sources_the_ledger_named(
    store: Store,
) -> None:
    now = store.now_ms()
    # a block written before blocks kept their source, under a permanent one's
    store.redis.hset(
        store.key("num", N1),
        mapping={
            "s": "blocked",
            "v": 1,
            "x": 0,
            "bl": f"[[{now - 10},{now + 5000}]]",
            "src": "sms",
        },
    )
    store.redis.sadd(store.key("blocked"), N1)
    assert store.adopt_step() is True
    assert json.loads(store.ledger(N1)["bl"]) == [[now - 10, now + 5000, "sms"]]
    assert store.ledger(N1)["rs"] == "sms"
    assert store.redis.zscore(store.key("expiry"), N1) == now + 5000
    steps = 0
    while store.adopt_step():  # the buckets after the set of before: a few steps
        steps += 1
        assert steps < 20
    assert store.redis.get(store.key("adopted")) == b"done"
    assert store.adopt_step() is False  # the pass has ended


def test_reads_of_a_number_pages_and_where_it_stands_at_a_target(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, expires_in_ms=60_000)
    accept(store, Action.ADD, N2)
    pages = list(store.blocked_pages(100))
    rows = sorted(row for page in pages for row in page)
    now = str(store.now_ms())
    assert rows == [(N1, str(store.now_ms() + 60_000), now), (N2, "", now)]
    view = store.provider_view(N1, ["voicenter"])["voicenter"]
    assert view == {
        "confirmed": None, "staged": "add", "in_flight_chunk": None, "retry_at_ms": None,
        "attempts": 0, "dead_letter": None, "last_answer": None,
    }  # fmt: skip
    assert store.audit(N1, limit=1)[0]["res"] == "applied"
    assert store.ledger("+972509999999") == {}


def _walk(page: Callable[[str], tuple[str, list[str]]], cursor: str = "0") -> list[str]:
    """Every number a paged read gives, from `cursor` to its end ("0")."""
    seen: list[str] = []
    while True:
        cursor, numbers = page(cursor)
        seen.extend(numbers)
        if cursor == "0":
            return seen


def _confirmed_everywhere(store: Store, target: str = "voicenter") -> dict[str, str]:
    numbers = _walk(lambda cursor: store.confirmed_page(target, cursor, 10))
    claims = store.confirmations(target, numbers)
    return {n: c for n, c in zip(numbers, claims, strict=True) if c}


def test_a_confirmation_is_a_field_of_the_numbers_ledger_not_a_hash_per_target(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    store.complete((chunk := lease(store)), all_done(chunk), OPTIONS)
    field = store.confirmation_field("voicenter")
    assert field is not None
    assert store.redis.hget(store.key("num", N1), field) == b"b1"  # blocked:1, kept short
    assert store.confirmation("voicenter", N1) == "blocked:1"
    assert store.redis.exists(store.key("confirmed", "voicenter")) == 0
    # The catch-up's second pass finds them by scanning the ledger.
    assert _confirmed_everywhere(store) == {N1: "blocked:1", N2: "blocked:1"}
    assert _confirmed_everywhere(store, "phonely:1") == {}
    # A code is a target's for good: another target gets another field.
    live(store, **{"phonely:1": {"provider": "phonely", "max_batch": 100}})
    store.stage_many("phonely:1", [N1])  # (reads its confirmation: none yet)
    other = store.confirmation_field("phonely:1")
    assert other is not None and other != field


def test_confirmations_kept_the_old_way_win_while_they_last_and_are_moved(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    store.complete((chunk := lease(store)), all_done(chunk), OPTIONS)
    # What a release before the ledger kept them left, or an older process of a rolling
    # upgrade wrote since: the newer word.
    legacy = store.key("confirmed", "voicenter")
    store.redis.hset(legacy, mapping={N1: "?", N2: "blocked:1"})
    assert store.confirmation("voicenter", N1) == "?"
    assert store.stage_many("voicenter", [N1, N2, N3]).count == 1  # N1 is pushed again
    assert staged(store) == [N1]
    assert store.move_confirmations(count=100) == 2
    assert store.redis.exists(legacy) == 0
    assert store.move_confirmations() == 0
    assert store.confirmations("voicenter", [N1, N2, N3]) == ["?", "blocked:1", "blocked:1"]
    # A write takes the old entry out, so it can no longer outvote the ledger's.
    store.redis.hset(legacy, N3, "?")
    store.complete((chunk := lease(store)), all_done(chunk), OPTIONS)  # N1 again
    assert store.confirmation("voicenter", N1) == "blocked:1"
    assert store.confirmation("voicenter", N3) == "?"
    assert store.redis.hexists(legacy, N1) is False


def test_moving_old_confirmations_goes_a_page_at_a_time_until_none_is_left(
    store: Store,
) -> None:
    live(store)
    many = [f"+9725{i:08d}" for i in range(600)]  # past any listpack
    store.accept(event(store, Action.ADD), [(n, "") for n in many], ROUTE, 3600)
    legacy = store.key("confirmed", "voicenter")
    store.redis.hset(legacy, mapping={n: "blocked:1" for n in many})  # a hash table, not a list
    steps = []
    while moved := store.move_confirmations(count=50):
        steps.append(moved)
    assert sum(steps) == 600 and len(steps) > 2
    assert max(steps) < 300  # a page, not the lot: a long script stalls every other call
    assert store.redis.exists(legacy) == 0
    assert set(store.confirmations("voicenter", many)) == {"blocked:1"}


def test_an_expiry_and_a_remove_time_are_fields_only_while_they_say_something(
    store: Store,
) -> None:
    live(store)
    store.accept(event(store, Action.ADD, expires_in_ms=60_000), [(N1, "")], ROUTE, 3600)
    assert "x" in store.ledger(N1)
    store.accept(event(store, Action.ADD), [(N1, "")], ROUTE, 3600)  # for good now
    assert "x" not in store.ledger(N1) and "rt" not in store.ledger(N1)
    store.accept(event(store, Action.REMOVE, ago_ms=0), [(N1, "")], ROUTE, 3600)
    ledger = store.ledger(N1)
    assert ledger["s"] == "unblocked" and int(ledger["rt"]) > 0 and "x" not in ledger


def _blocks(store: Store, n: str) -> list[list[object]]:
    ledger = store.ledger(n)
    return ledger_blocks(ledger.get("bl"), ledger.get("t"), ledger.get("rs"))


def test_one_permanent_block_at_the_event_time_is_kept_short_any_other_as_json(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    first = event(store, Action.ADD, ago_ms=5000, source="crm")
    store.accept(first, [(N1, "")], ROUTE, 3600)
    assert store.ledger(N1)["bl"] == "="
    assert _blocks(store, N1) == [[first["t"], 0, "crm"]]
    # another source's temporary block beside it: both, as JSON
    temp = event(store, Action.ADD, ago_ms=1000, source="sms", expires_in_ms=5000)
    store.accept(temp, [(N1, "")], ROUTE, 3600)
    assert sorted(_blocks(store, N1)) == [[first["t"], 0, "crm"], [temp["t"], temp["x"], "sms"]]
    assert store.ledger(N1)["bl"] != "="
    # the temporary one ends: one permanent block again, but older than the ledger's time
    clock.advance(6)
    store.expire_due()
    ledger = store.ledger(N1)
    assert (ledger["s"], ledger["rs"], int(ledger["t"])) == ("blocked", "crm", temp["t"])
    assert json.loads(ledger["bl"]) == [[first["t"], 0, "crm"]]
    assert store.blocked_until([N1], 0, "crm") == {N1}
    assert store.blocked_until([N1], 0, "sms") == set()
    # the same source again, newer: short again, and read back by every reader
    again = event(store, Action.ADD, ago_ms=0, source="crm")
    store.accept(again, [(N1, "")], ROUTE, 3600)
    assert store.ledger(N1)["bl"] == "="
    assert _blocks(store, N1) == [[again["t"], 0, "crm"]]
    assert store.blocked_until([N1], 0, "crm") == {N1}
    # a remove older than the block lifts nothing; a newer one lifts it
    assert accept(store, Action.REMOVE, N1, ago_ms=10) == ["stale"]
    assert _blocks(store, N1) == [[again["t"], 0, "crm"]]
    clock.advance(1)
    assert accept(store, Action.REMOVE, N1, ago_ms=0) == ["applied"]
    assert store.ledger(N1)["bl"] == "[]" and store.ledger(N1)["s"] == "unblocked"


def _all_blocked(store: Store, count: int) -> list[str]:
    return _walk(lambda cursor: store.blocked_page(cursor, count))


def test_blocked_numbers_are_indexed_as_digits_in_buckets_by_their_last_digits(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    bucket = store.key("blocked", str(blocked_bucket(N1)))
    assert store.redis.sismember(bucket, N1[1:])
    assert store.redis.object("encoding", bucket) == b"intset"  # integers: ~8 bytes each
    assert store.redis.get(store.key("blocked:count")) == b"2"
    assert store.redis.exists(store.key("blocked")) == 0  # the one set of before: never
    assert sorted(_all_blocked(store, 100)) == [N1, N2]
    assert store.blocked_among([N1, N2, N3]) == {N1, N2}
    store.accept(event(store, Action.REMOVE, ago_ms=0), [(N1, "")], ROUTE, 3600)
    assert not store.redis.sismember(bucket, N1[1:])
    assert store.redis.get(store.key("blocked:count")) == b"1"
    assert _all_blocked(store, 100) == [N2]


def test_a_page_of_the_blocked_index_is_about_its_count_and_every_number_is_read_once(
    store: Store,
) -> None:
    many = [f"+9725{i:08d}" for i in range(0, 3_000_000, 997)]  # 3,010, spread like real ones
    store.accept(event(store, Action.ADD), [(n, "") for n in many], ROUTE, 3600)
    seen, cursor, pages = [], "0", 0
    while True:
        cursor, page = store.blocked_page(cursor, 500)
        seen.extend(page)
        pages += 1
        assert len(page) < 1000
        if cursor == "0":
            break
    assert sorted(seen) == sorted(many) and 5 <= pages <= 10


def test_numbers_blocked_in_the_one_set_of_before_stay_blocked_and_are_moved(
    store: Store,
) -> None:
    live(store)
    many = [f"+9725{i:08d}" for i in range(600)]
    store.accept(event(store, Action.ADD), [(n, "") for n in many], ROUTE, 3600)
    # As a deployment from before left them: one set, no buckets.
    for n in many:
        store.redis.srem(store.key("blocked", str(blocked_bucket(n))), n[1:])
    store.redis.delete(store.key("blocked:count"))
    store.redis.sadd(store.key("blocked"), *many)
    # A catch-up that was under way goes on from its old cursor, then reads the buckets.
    cursor, first = store.blocked_page("0", 100)
    assert cursor.isdigit() and cursor != "0"
    rest = _all_blocked_from(store, cursor)
    assert set(first + rest) == set(many)
    assert store.blocked_among(many[:3]) == set(many[:3])
    # A number lifted meanwhile leaves both.
    store.accept(event(store, Action.REMOVE, ago_ms=0), [(many[0], "")], ROUTE, 3600)
    assert not store.redis.sismember(store.key("blocked"), many[0])
    while store.move_confirmations(count=100):
        pass
    assert store.redis.exists(store.key("blocked")) == 0
    assert store.redis.get(store.key("blocked:count")) == b"599"
    assert sorted(_all_blocked(store, 1000)) == sorted(many[1:])


def _all_blocked_from(store: Store, cursor: str) -> list[str]:
    return _walk(lambda at: store.blocked_page(at, 100), cursor)
