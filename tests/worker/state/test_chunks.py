"""claim, open, renew, complete, release and sweep on a real Redis: the records each answers,
and what each leaves of batches, chunks, leases, confirmations, retries and dead letters."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from tests.worker.state.scene import (
    N1,
    N2,
    N3,
    OPTIONS,
    VOICENTER,
    accept,
    all_done,
    answer,
    dead_letter,
    hget,
    lease,
    live,
    opened,
    retry_at,
    staged,
)
from worker.providers.base import Action
from worker.state.keyspace import FirstSlot
from worker.state.records import (
    Chunk,
    ChunkItem,
    Claimed,
    Completion,
    Released,
    Staged,
    Tally,
)
from worker.state.store import Store

COUNTS = {"done": 0, "retry": 0, "dead": 0, "stale": 0, "orphan": 0, "outage": 0, "unsent": 0}


def _claim(store: Store, mode: str = "all", **kw: int) -> Claimed:
    args = {"size": 2, "lease_seconds": 60, "linger_ms": 1000, "max_chunks": 5, **kw}
    return store.claim("voicenter", "voicenter", Action.ADD, mode=mode, **args)  # type: ignore[arg-type]


def _counts(**kw: int) -> dict[str, int]:
    return {**COUNTS, **kw}


def test_a_claim_leases_staged_numbers_as_chunks_of_the_batch_size(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    claimed = _claim(store)
    assert claimed == Claimed("ok", ["1", "2"], [])
    raw = store.redis.get(store.key("chunk", "1"))
    assert raw is not None
    chunk = Chunk.parse(raw.decode())
    now = store.now_ms()
    assert (chunk.id, chunk.target, chunk.provider, chunk.action) == (
        "1", "voicenter", "voicenter", Action.ADD
    )  # fmt: skip
    assert chunk.items == [
        ChunkItem(N1, "1", "", 0, "", "api", "asked", now),
        ChunkItem(N2, "1", "", 0, "", "api", "asked", now),
    ]
    assert json.loads(raw)["created"] == now
    assert store.expired_leases() == []
    assert store.redis.zscore(store.key("leases"), "1") == now + 60_000
    assert hget(store, "inflight:voicenter", N3) == "2"
    assert staged(store) == []
    assert store.counts(["voicenter"]) == {
        "voicenter": {"staged_add": 0, "staged_remove": 0, "in_flight": 3}
    }


def test_full_takes_only_full_chunks_and_due_waits_for_the_linger(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    assert _claim(store, "full").chunks == ["1"]
    assert staged(store) == [N3]
    assert _claim(store, "full") == Claimed("ok", [], [])
    assert _claim(store, "due") == Claimed("ok", [], [])  # staged less than a linger ago
    clock.advance(1)
    assert _claim(store, "due").chunks == ["2"]


def test_nothing_is_claimed_for_a_target_stopped_or_at_its_in_flight_cap(
    store: Store, clock: FakeClock
) -> None:
    accept(store, Action.ADD, N1, N2, N3)
    assert _claim(store) == Claimed("inactive", [], [])  # no process announced it
    live(store)
    accept(store, Action.ADD, N1, N2, N3, key="again")
    store.pause("voicenter", "auth", "VOICENTER_API_CODE", "401")
    assert _claim(store) == Claimed("paused", [], [])
    store.resume("voicenter")
    store.hold("voicenter", 5)
    assert _claim(store) == Claimed("held", [], [])
    clock.advance(5)
    # one chunk's worth in flight is the cap
    assert _claim(store, max_in_flight=1).chunks == ["1"]
    assert _claim(store, max_in_flight=1) == Claimed("ok", [], [])
    assert staged(store) == [N3]


def test_an_open_circuit_lets_one_chunk_at_a_time_probe(store: Store, clock: FakeClock) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    store.redis.hset(store.key("breaker", "voicenter"), mapping={"opens": 1, "until": 0})
    assert _claim(store, size=1).chunks == ["1"]  # one, though five were allowed
    assert _claim(store, size=1) == Claimed("probing", [], [])


def test_a_claim_stages_anew_a_number_whose_ledger_moved_after_staging(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    # the ledger says unblocked now, and nothing re-staged it (as after a lost write)
    store.redis.hset(store.key("num", N1), mapping={"s": "unblocked", "v": 2})
    claimed = _claim(store)
    assert claimed == Claimed("ok", [], [Staged("voicenter", Action.REMOVE, 1, 0, 0)])
    assert staged(store, action=Action.REMOVE) == [N1]
    assert store.redis.exists(store.key("chunk", "1")) == 0


def test_open_answers_the_chunk_its_numbers_ledger_now_and_restarts_the_lease(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    (chunk_id,) = _claim(store).chunks
    clock.advance(30)
    accept(store, Action.REMOVE, N2, ago_ms=0)  # moved while the chunk waited
    found = opened(store, chunk_id)
    assert [i.e164 for i in found.chunk.items] == [N1, N2]
    assert found.chunk.raw == store.redis.get(store.key("chunk", chunk_id)).decode()  # type: ignore[union-attr]
    assert found.stopped is False
    assert found.states == {N1: "blocked", N2: "unblocked"}
    assert found.versions == {N1: "1", N2: "2"}
    assert store.redis.zscore(store.key("leases"), chunk_id) == store.now_ms() + 60_000
    assert hget(store, "opened", chunk_id) == "1"
    assert store.open_chunk("404", 60) is None


def test_a_claim_asked_to_open_answers_its_first_chunk_as_open_does(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    claimed = _claim(store, max_chunks=2, open_first=True)
    assert claimed.chunks == ["1", "2"]
    assert claimed.opened == store.open_chunk("1", 60)  # opened once more by the check
    assert claimed.opened is not None
    assert [i.e164 for i in claimed.opened.chunk.items] == [N1, N2]
    assert claimed.opened.states == {N1: "blocked", N2: "blocked"}
    assert (claimed.opened.stopped, claimed.opened.versions) == (False, {N1: "1", N2: "1"})
    assert hget(store, "opened", "1") == "2"  # counted as an opening, like open.lua's
    assert hget(store, "opened", "2") is None
    assert store.redis.zscore(store.key("leases"), "1") == store.now_ms() + 60_000
    # Not asked, or nothing claimed: nothing opened.
    accept(store, Action.ADD, N1, N2, key="again", ago_ms=0)
    assert _claim(store).opened is None
    assert _claim(store, open_first=True) == Claimed("ok", [], [])


def _slots(store: Store) -> dict[str, float]:
    held = store.redis.zrange(store.key("slots", "voicenter"), 0, -1, withscores=True)
    return {token.decode(): score for token, score in held}


def test_an_opening_takes_its_first_requests_slot_when_asked_and_one_is_free(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    claimed = _claim(store, max_chunks=2)
    first = FirstSlot("tok", {"voicenter": (0.0, 1, 30.0)})
    found = store.open_chunk(claimed.chunks[0], 60, first)
    assert found is not None and found.slot == "tok"
    assert _slots(store) == {"tok": store.now_ms() + 30_000}  # leased as slot.lua leases it
    assert store.redis.zscore(store.key("rate", "voicenter"), "tok") == store.now_ms()
    # The cap of one is taken: the next opening gets none, and its request asks as any other.
    again = store.open_chunk(claimed.chunks[1], 60, FirstSlot("two", first.terms))
    assert again is not None and again.slot == ""
    assert list(_slots(store)) == ["tok"]
    # None asked, or none for this provider: none taken.
    store.give_back_slots([("voicenter", "tok")])
    assert store.open_chunk(claimed.chunks[1], 60) == replace(again, slot="")
    other = store.open_chunk(claimed.chunks[1], 60, FirstSlot("x", {"phonely": (0.0, 0, 30.0)}))
    assert other is not None and other.slot == ""
    assert _slots(store) == {}


def test_the_rate_cap_counts_a_first_slots_request_from_the_last_moment_it_may_be_sent(
    store: Store, clock: FakeClock
) -> None:
    # Sent up to `within` after its slot was taken: counted from then, the next second's
    # requests could follow it closer than a cap of one a second allows.
    live(store)
    accept(store, Action.ADD, N1)
    [chunk_id] = _claim(store).chunks
    first = FirstSlot("tok", {"voicenter": (1.0, 0, 30.0)}, within=0.1)
    found = store.open_chunk(chunk_id, 60, first)
    assert found is not None and found.slot == "tok"
    assert store.redis.zscore(store.key("rate", "voicenter"), "tok") == store.now_ms() + 100
    take = {"rps": 1.0, "concurrency": 0, "lease_seconds": 30.0}
    clock.advance(1.0)
    assert store.acquire_slot("voicenter", "next", **take) > 0  # type: ignore[arg-type]
    clock.advance(0.1)
    assert store.acquire_slot("voicenter", "next", **take) == 0  # type: ignore[arg-type]


def test_a_first_slot_is_dated_from_when_its_round_trip_was_sent_not_answered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lease.Slots counts the tenth of a second its request goes out within from then: the
    # slot was taken after it, and the rate cap counts the request from a tenth after that.
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    [first_id] = _claim(store, max_chunks=1).chunks
    monkeypatch.setattr(store, "_run", _slowly(store._run))
    before = time.monotonic()
    found = store.open_chunk(first_id, 60, FirstSlot("tok", {"voicenter": (0.0, 0, 30.0)}))
    assert found is not None and found.slot == "tok"
    assert before <= found.slot_at < before + 0.05
    assert store.open_chunk(first_id, 60) == replace(found, slot="")  # none: undated
    # The chain's claim too, sent with the completion.
    chunk = found.chunk
    options = {"size": 2, "lease_seconds": 60, "mode": "all", "linger_ms": 0, "max_chunks": 1,
               "max_in_flight": 0, "open_first": True,
               "first_slot": FirstSlot("two", {"voicenter": (0.0, 0, 30.0)})}  # fmt: skip
    monkeypatch.setattr(store, "_run_in_order", _slowly(store._run_in_order))
    before = time.monotonic()
    _, claimed = store.complete_then_claim(chunk, all_done(chunk), OPTIONS, **options)
    assert claimed.opened is not None and claimed.opened.slot == "two"
    assert before <= claimed.opened.slot_at < before + 0.05


def _slowly(call: Any) -> Any:
    def slow(*args: Any) -> Any:
        answer = call(*args)
        time.sleep(0.05)
        return answer

    return slow


def test_an_opening_takes_no_slot_while_its_provider_is_held(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    [chunk_id] = _claim(store).chunks
    store.hold("voicenter", 5)
    found = store.open_chunk(chunk_id, 60, FirstSlot("tok", {"voicenter": (0.0, 0, 30.0)}))
    assert found is not None and found.stopped and found.slot == ""
    assert _slots(store) == {}


def test_a_claim_that_opens_takes_the_first_requests_slot_with_it(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    first = FirstSlot("tok", {"voicenter": (0.0, 0, 30.0)})
    claimed = _claim(store, max_chunks=2, open_first=True, first_slot=first)  # type: ignore[arg-type]
    assert claimed.opened is not None and claimed.opened.slot == "tok"
    assert list(_slots(store)) == ["tok"]  # one: for the chunk opened only
    # A claim that opens nothing takes none.
    store.give_back_slots([("voicenter", "tok")])
    accept(store, Action.ADD, N1, N2, key="again", ago_ms=0)
    assert _claim(store, first_slot=first).opened is None  # type: ignore[arg-type]
    assert _slots(store) == {}


def test_a_claim_that_opens_answers_as_open_does_for_held_and_moved_numbers(
    store: Store,
) -> None:
    # The claim hands open_chunk the states and versions it read itself: held (an add-only
    # target holds the number already) and a number whose ledger moved after staging (not
    # in the chunk) must come out as open.lua, reading them again, says.
    live(store, voicenter={**VOICENTER, "add_only": True})
    accept(store, Action.ADD, N1, N2, N3)
    store.redis.hset(store.key("confirmed", "voicenter"), N2, "blocked:1")
    store.redis.hset(store.key("num", N3), "s", "unblocked")  # moved, nothing re-staged
    claimed = _claim(store, size=3, max_chunks=1, open_first=True)
    assert claimed.opened is not None
    assert [i.e164 for i in claimed.opened.chunk.items] == [N1, N2]
    assert claimed.opened.states == {N1: "blocked", N2: "held"}
    assert claimed.opened.versions == {N1: "1", N2: "1"}
    assert claimed.opened == store.open_chunk(claimed.chunks[0], 60)


def test_complete_then_claim_claims_after_the_completion_in_one_round_trip(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    (first,) = _claim(store, max_chunks=1, max_in_flight=1).chunks
    chunk = opened(store, first).chunk
    assert _claim(store, max_in_flight=1) == Claimed("ok", [], [])  # at the cap
    options = {"size": 2, "lease_seconds": 60, "mode": "all", "linger_ms": 0, "max_chunks": 1,
               "max_in_flight": 1, "open_first": True}  # fmt: skip
    done, claimed = store.complete_then_claim(chunk, all_done(chunk), OPTIONS, **options)
    assert (done.status, done.counts) == ("ok", _counts(done=2))
    # The completed chunk no longer counts against the cap: the claim after it takes one.
    assert claimed.chunks == ["2"]
    assert claimed.opened is not None
    assert [i.e164 for i in claimed.opened.chunk.items] == [N3]


def test_a_completion_that_fails_leaves_nothing_claimed_by_the_claim_that_came_with_it(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    (first,) = _claim(store, max_chunks=1).chunks
    chunk = opened(store, first).chunk
    broken = replace(chunk, raw=chunk.raw[:-1])  # complete.lua cannot read it: it fails
    options = {"size": 2, "lease_seconds": 60, "mode": "all", "linger_ms": 0, "max_chunks": 1,
               "max_in_flight": 0, "open_first": True,
               "first_slot": FirstSlot("tok", {"voicenter": (0.0, 0, 30.0)})}  # fmt: skip
    with pytest.raises(redis.ResponseError):
        store.complete_then_claim(broken, all_done(chunk), OPTIONS, **options)
    assert _slots(store) == {}  # nor the slot its opening took
    # The push fails with its chunk still leased (recovered once the lease runs out); the
    # chain it would have gone on with does not exist, so nothing else may stay leased,
    # opened and pushed by nobody: the claim's numbers wait staged again.
    assert store.redis.zrange(store.key("leases"), 0, -1) == [first.encode()]
    assert staged(store) == [N3]
    assert store.redis.hlen(store.key("inflight", "voicenter")) == 2


def test_open_says_stopped_while_the_provider_is_paused_or_held(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    store.hold("voicenter", 5)
    assert opened(store, chunk.id).stopped is True
    store.redis.delete(store.key("hold", "voicenter"))
    store.pause("voicenter", "auth", "VOICENTER_API_CODE", "401")
    assert opened(store, chunk.id).stopped is True


def test_open_says_held_for_a_number_an_add_only_target_holds_already(store: Store) -> None:
    meta = {**VOICENTER, "add_only": True}
    live(store, voicenter=meta)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    store.redis.hset(store.key("confirmed", "voicenter"), N1, "blocked:1")
    assert opened(store, chunk.id).states == {N1: "held"}


def test_renew_only_lengthens_a_lease_and_fails_once_the_chunk_is_gone(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    until = store.redis.zscore(store.key("leases"), chunk.id)
    assert store.renew(chunk.id, 10) is True
    assert store.redis.zscore(store.key("leases"), chunk.id) == until  # never shorter
    clock.advance(5)
    assert store.renew(chunk.id, 60) is True
    assert store.redis.zscore(store.key("leases"), chunk.id) == store.now_ms() + 60_000
    store.complete(chunk, all_done(chunk), OPTIONS)
    assert store.renew(chunk.id, 60) is False


def test_done_confirms_the_version_and_clears_the_chunk(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    done = store.complete(chunk, all_done(chunk), OPTIONS)
    assert done == Completion("ok", _counts(done=1), [], "closed", store.now_ms())
    assert store.confirmation("voicenter", N1) == "blocked:1"
    assert hget(store, "inflight:voicenter", N1) is None
    for key in ("chunk:" + chunk.id,):
        assert store.redis.exists(store.prefix + key) == 0
    assert store.redis.zscore(store.key("leases"), chunk.id) is None
    assert hget(store, "opened", chunk.id) is None
    # A success is in the audit trail; the last answer stays only while it is a failure.
    assert hget(store, "answer:voicenter", N1) is None
    last = store.audit(N1)[0]
    assert (last["prov"], last["act"], last["out"], last["v"], last["n"]) == (
        "voicenter", "add", "done", 1, 0,
    )  # fmt: skip


def test_a_ledger_that_moved_during_the_push_is_staged_again(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    accept(store, Action.REMOVE, N1, ago_ms=0)
    assert staged(store, action=Action.REMOVE) == []  # in flight: left to the completion
    done = store.complete(chunk, all_done(chunk), OPTIONS)
    assert done.staged == [Staged("voicenter", Action.REMOVE, 1, 0, 0)]
    # the add landed: confirmed as what it pushed, and the newest state goes out next
    assert store.confirmation("voicenter", N1) == "blocked:1"
    assert staged(store, action=Action.REMOVE) == [N1]


def test_a_retry_spends_an_attempt_backs_off_and_leaves_the_state_unknown(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    chunk = lease(store)
    results = {
        N1: answer("retry", "server_error", detail="500"),  # jitter 0: half the backoff
        N2: answer("retry", "busy", retry_after_ms=5000),  # a Retry-After is a floor
    }
    done = store.complete(chunk, results, OPTIONS)
    assert done.counts == _counts(retry=2)
    now = store.now_ms()
    assert (retry_at(store, N1), retry_at(store, N2)) == (now + 500, now + 5000)
    assert hget(store, "fails:voicenter", N1) == "1:1"
    assert store.confirmation("voicenter", N1) == "?"  # it may have been applied
    assert store.retry_counts() == {"voicenter": 2}
    assert store.provider_view(N1, ["voicenter"])["voicenter"]["attempts"] == 1


def test_the_last_attempt_dead_letters_the_number(store: Store, clock: FakeClock) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    for attempt in range(1, OPTIONS.max_attempts + 1):
        chunk = lease(store)
        done = store.complete(chunk, {N1: answer("retry", "server_error", detail="500")}, OPTIONS)
        clock.advance(10)
        if attempt < OPTIONS.max_attempts:
            assert done.counts == _counts(retry=1)
            assert store.sweep_retries().count == 1
    assert done.counts == _counts(dead=1)
    entry = dead_letter(store, N1)
    assert entry is not None
    assert (entry["reason"], entry["attempts"], entry["version"], entry["action"]) == (
        "max_attempts", 3, "1", "add"
    )  # fmt: skip
    assert entry["last_error"] == "server_error: 500"
    assert retry_at(store, N1) is None
    assert hget(store, "fails:voicenter", N1) is None
    assert store.dead_letter_counts() == {"voicenter": 1}


def test_a_permanent_answer_dead_letters_at_once_and_a_later_done_clears_it(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    store.complete(chunk, {N1: answer("permanent", "bad_format", detail="no")}, OPTIONS)
    entry = dead_letter(store, N1)
    assert entry is not None
    assert (entry["reason"], entry["attempts"]) == ("bad_format", 1)
    assert store.oldest_dead_letter_ms() == store.now_ms()
    store.replay([f"voicenter|{N1}"], "ops")
    chunk = lease(store)
    store.complete(chunk, all_done(chunk), OPTIONS)
    assert dead_letter(store, N1) is None
    assert store.oldest_dead_letter_ms() is None


def test_an_outage_spends_no_attempt_and_opens_the_circuit_at_the_threshold(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    down = {N1: answer("outage", "timeout", detail="read")}
    done = store.complete(chunk, down, OPTIONS)
    assert (done.counts, done.circuit) == (_counts(outage=1), "failing")
    now = store.now_ms()
    assert hget(store, "fails:voicenter", N1) is None
    assert hget(store, "outage:voicenter", N1) == f"1:{now}:{now}"
    assert retry_at(store, N1) == now + 500  # the backoff base at first, half by jitter
    assert store.circuit("voicenter") is None  # failing, not open
    clock.advance(0.5)
    assert store.sweep_retries().count == 1
    chunk = lease(store)
    done = store.complete(chunk, down, OPTIONS)
    assert done.circuit == "open"
    now = store.now_ms()
    circuit = store.circuit("voicenter")
    assert circuit == {
        "opens": 1,
        "since_ms": now,
        "until_ms": now + 1000,
        "reason": "timeout: read",
    }
    assert store.held_for("voicenter") == 1.0
    assert store.open_circuits(["voicenter", "phonely"]) == {"voicenter": circuit}
    assert _claim(store) == Claimed("held", [], [])
    # once the hold has passed, one chunk probes; an answer closes the circuit
    clock.advance(2)
    assert store.sweep_retries().count == 1
    chunk = lease(store)
    assert store.complete(chunk, all_done(chunk), OPTIONS).circuit == "closed"
    assert store.circuit("voicenter") is None


def test_a_rate_limit_is_no_failure_of_the_provider(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    limited = {N1: answer("outage", "rate_limited", retry_after_ms=2000)}
    done = store.complete(chunk, limited, OPTIONS)
    assert (done.counts, done.circuit) == (_counts(outage=1), "closed")
    assert retry_at(store, N1) == store.now_ms() + 2000


def test_a_retry_window_dead_letters_once_spent_whatever_the_attempts(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    waiting = {N1: answer("retry", "no_record", detail="404", window_ms=20_000)}
    for _ in range(4):  # past max_attempts (3): the window decides
        chunk = lease(store)
        assert store.complete(chunk, waiting, OPTIONS).counts == _counts(retry=1)
        clock.advance(5)
        assert store.sweep_retries().count == 1
    chunk = lease(store)
    assert store.complete(chunk, waiting, OPTIONS).counts == _counts(dead=1)  # 20 s spent
    entry = dead_letter(store, N1)
    assert entry is not None
    assert (entry["reason"], entry["attempts"], entry["last_error"]) == (
        "no_record", 5, "no_record: 404"
    )  # fmt: skip


def test_numbers_not_sent_are_staged_again_and_one_not_reported_is_a_retry(
    store: Store,
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    chunk = lease(store)
    results = {N1: answer("stale", "stale"), N2: answer("unsent", "unsent")}
    done = store.complete(chunk, results, OPTIONS)
    assert done.counts == _counts(stale=1, unsent=1, retry=1)
    assert done.staged == [Staged("voicenter", Action.ADD, 2, 0, 0)]
    assert staged(store) == [N1, N2]
    assert store.confirmation("voicenter", N1) is None  # nothing was sent
    assert json.loads(hget(store, "answer:voicenter", N3) or "")["rsn"] == "no_result"
    assert retry_at(store, N3) is not None
    # It may have been sent: the next push of it is confirmed only once no late request of
    # this one can land (the others were not sent at all).
    assert hget(store, "late:voicenter", N3) == str(store.now_ms() + OPTIONS.late_ms)
    assert hget(store, "late:voicenter", N1) is None
    assert hget(store, "late:voicenter", N2) is None


def test_a_request_that_may_land_later_and_a_retry_after_hold(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    results = {N1: answer("retry", "not_in_answer", may_land=True)}
    store.complete(chunk, results, replace(OPTIONS, hold_ms=7000))
    now = store.now_ms()
    assert hget(store, "late:voicenter", N1) == str(now + OPTIONS.late_ms)
    assert store.redis.get(store.key("hold", "voicenter")) == str(now + 7000).encode()


def test_a_done_for_a_recovered_chunk_is_an_orphan_and_confirms_nothing(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    clock.advance(61)
    assert store.expired_leases() == [chunk.id]
    released = store.release(chunk.id, recover=True, late_ms=OPTIONS.late_ms)
    assert released == Released("ok", [Staged("voicenter", Action.ADD, 1, 0, 0)])
    assert store.confirmation("voicenter", N1) == "?"
    assert hget(store, "late:voicenter", N1) == str(store.now_ms() + OPTIONS.late_ms)
    assert store.redis.exists(store.key("chunk", chunk.id)) == 0
    assert store.expired_leases() == []
    # the presumed-dead pusher answers after all: its answer must not count
    newer = lease(store)
    late = store.complete(chunk, all_done(chunk), OPTIONS)
    assert late == Completion("orphan", _counts(orphan=1), [], "closed", store.now_ms())
    assert store.confirmation("voicenter", N1) == "?"
    assert hget(store, "unknown:voicenter", N1) == newer.id  # the push in flight won't count
    store.complete(newer, all_done(newer), OPTIONS)
    assert store.confirmation("voicenter", N1) == "?"  # overtaken: one more push
    assert staged(store) == [N1]


def test_a_recovery_finds_a_renewed_lease_alive_and_a_gone_chunk_gone(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    clock.advance(61)
    assert store.renew(chunk.id, 60)
    assert store.release(chunk.id, recover=True, late_ms=1000) == Released("alive", [])
    assert hget(store, "inflight:voicenter", N1) == chunk.id
    store.complete(chunk, all_done(chunk), OPTIONS)
    assert store.release(chunk.id, recover=True, late_ms=1000) == Released("gone", [])


def test_a_chunk_handed_back_unsent_is_staged_with_nothing_unknown(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    released = store.release(chunk.id, recover=False, late_ms=OPTIONS.late_ms)
    assert released == Released("ok", [Staged("voicenter", Action.ADD, 1, 0, 0)])
    assert store.confirmation("voicenter", N1) is None
    assert hget(store, "late:voicenter", N1) is None
    assert hget(store, "inflight:voicenter", N1) is None


def test_a_chunk_pushed_twice_leaves_late_marks_for_its_numbers(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    opened(store, chunk.id)  # its task delivered a second time
    store.complete(chunk, all_done(chunk), OPTIONS)
    assert hget(store, "late:voicenter", N1) == str(store.now_ms() + OPTIONS.late_ms)
    # confirmed by one more push once the other delivery's request can no longer land
    assert store.confirmation("voicenter", N1) == "?"
    assert retry_at(store, N1) == store.now_ms() + OPTIONS.late_ms + 1


def test_the_sweep_moves_due_retries_and_drops_the_work_of_targets_not_live(
    store: Store, clock: FakeClock
) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    chunk = lease(store)
    store.complete(chunk, {n: answer("retry", "server_error") for n in (N1, N2)}, OPTIONS)
    assert store.sweep_retries() == Tally(0, [])
    clock.advance(0.5)
    assert store.sweep_retries() == Tally(2, [Staged("voicenter", Action.ADD, 2, 0, 0)])
    assert retry_at(store, N1) is None
    assert store.staged_batches(["voicenter"]) == [("voicenter", Action.ADD, 2, store.now_ms())]
    clock.advance(3600)  # no process announced it for its TTL
    store.redis.zadd(store.key("retry"), {f"voicenter|{N1}": store.now_ms()})
    assert store.sweep_retries() == Tally(1, [])
    assert staged(store) == []
    assert retry_at(store, N1) is None


@pytest.mark.parametrize("outcome", ["retry", "outage"])
def test_a_failed_push_of_an_add_only_target_keeps_its_confirmation(
    store: Store, outcome: str
) -> None:
    live(store, voicenter={**VOICENTER, "add_only": True})
    accept(store, Action.ADD, N1)
    chunk = lease(store)
    store.redis.hset(store.key("confirmed", "voicenter"), N1, "blocked:1")
    store.complete(chunk, {N1: answer(outcome, "x")}, OPTIONS)
    assert store.confirmation("voicenter", N1) == "blocked:1"
