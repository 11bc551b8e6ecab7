"""Leases and late answers: a push renews its lease before every request, recovery re-checks
the lease, and an answer for a chunk that no longer owns a number makes that number's state
at the provider unknown, so it is pushed again (fakeredis, the real Lua scripts)."""

from __future__ import annotations

from typing import Any

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import Router, env_for, make_fake
from tests.fakes.voicenter import FakeVoicenter
from tests.worker.pipeline.test_batching import add, numbers, remove, settle
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.batching import Pipeline
from worker.providers.base import Action
from worker.state.store import Chunk


def _claim(pipe: Pipeline, action: Action, target: str = "voicenter") -> Chunk:
    provider = target.split(":", 1)[0]
    status, ids, _ = pipe.store.claim(
        target, provider, action, size=100, lease_seconds=pipe.settings.lease_seconds,
        mode=work.ALL, linger_ms=0, max_chunks=1,
    )  # fmt: skip
    assert status == "ok" and len(ids) == 1, (status, ids)
    opened = pipe.store.open_chunk(ids[0], pipe.settings.lease_seconds)
    assert opened is not None
    return opened.chunk


def _done(pipe: Pipeline, chunk: Chunk) -> str:
    results = {item.e164: ("done", "", "", 0, 0.5, 0, 0) for item in chunk.items}
    completion = pipe.store.complete(chunk, results, pipe.complete_options())
    work.schedule(pipe, completion.staged)
    return completion.status


def _confirmed(pipe: Pipeline, n: str, target: str = "voicenter") -> Any:
    return pipe.store.provider_view(n, [target])[target]["confirmed"]


def _leased_add(pipe: Pipeline, dispatcher: QueueDispatcher) -> tuple[str, Chunk]:
    """A number accepted, and its add leased by a worker (not pushed yet)."""
    n = numbers(1)[0]
    accept(pipe, add(n))
    dispatcher.tasks.clear()
    return n, _claim(pipe, Action.ADD)


def _remove_leased_then_blocked_again(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock, n: str
) -> Chunk:
    """The number is blocked (v1); worker A leases its remove (v2); the customer opts out
    again (v3) while A is in flight. Answers A's chunk."""
    accept(pipe, add(n))
    dispatcher.drain(pipe)
    clock.advance(1)
    accept(pipe, remove(clock, n))
    dispatcher.tasks.clear()
    chunk = _claim(pipe, Action.REMOVE)
    clock.advance(1)
    accept(pipe, Event("api", Action.ADD, [PhoneInput(n)], reason="pressed 9 again"))
    return chunk


def test_a_late_remove_from_a_recovered_chunk_never_gets_the_last_word(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    # Issue 13, item 1. The customer's add is confirmed; a remove (v2) is leased by worker
    # A, whose request is slow; the customer opts out again (v3) while A is in flight.
    n = numbers(1)[0]
    a = _remove_leased_then_blocked_again(pipe, dispatcher, clock, n)
    assert pipe.store.ledger(n)["v"] == "3"
    # A's lease runs out; recovery stages the add; worker B leases it.
    clock.advance(pipe.settings.lease_seconds + 1)
    assert work.recover(pipe) == 1
    dispatcher.tasks.clear()
    b = _claim(pipe, Action.ADD)
    # The provider applies B's add, then A's late remove; A's answer arrives first.
    fake_voicenter.blacklist.add(n[1:])
    fake_voicenter.blacklist.discard(n[1:])
    assert _done(pipe, a) == "orphan"
    # B's answer: the provider may hold A's remove after it, so B confirms nothing...
    assert _done(pipe, b) == "ok"
    assert _confirmed(pipe, n) == "?"
    # ...and the add goes out once more.
    settle(pipe, dispatcher, clock)
    assert n[1:] in fake_voicenter.blacklist
    assert _confirmed(pipe, n) == "blocked:3"


def test_a_late_answer_with_nothing_else_in_flight_pushes_the_ledger_again(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n, a = _leased_add(pipe, dispatcher)
    clock.advance(pipe.settings.lease_seconds + 1)
    work.recover(pipe)
    settle(pipe, dispatcher, clock)  # B pushes the add and confirms it
    assert _confirmed(pipe, n) == "blocked:1"
    clock.advance(1)
    accept(pipe, remove(clock, n))
    settle(pipe, dispatcher, clock)  # C pushes the remove
    assert _confirmed(pipe, n) == "unblocked:2"
    fake_voicenter.blacklist.add(n[1:])  # A's add lands now, long after
    assert _done(pipe, a) == "orphan"
    assert _confirmed(pipe, n) == "?"
    settle(pipe, dispatcher, clock)
    assert n[1:] not in fake_voicenter.blacklist
    assert _confirmed(pipe, n) == "unblocked:2"


def _retry_at(pipe: Pipeline, n: str, target: str = "voicenter") -> float | None:
    score = pipe.store.redis.zscore(pipe.store.key("retry"), f"{target}|{n}")
    return None if score is None else float(score)


def test_a_push_leased_while_a_late_request_may_land_is_confirmed_once_it_cannot(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    # Found by the simulation: A's late remove lands after B's add was answered, and A's
    # worker dies before its own answer, so nothing ever reports it. B is confirmed by one
    # more push, not at once (it could be overtaken just the same), but once A's request can
    # no longer land: a lease and an HTTP timeout after recovery.
    n = numbers(1)[0]
    _remove_leased_then_blocked_again(pipe, dispatcher, clock, n)  # A: never heard of again
    clock.advance(pipe.settings.lease_seconds + 1)
    recovered_at = pipe.store.now_ms()
    assert work.recover(pipe) == 1
    dispatcher.tasks.clear()
    b = _claim(pipe, Action.ADD)
    assert _done(pipe, b) == "ok"
    assert _confirmed(pipe, n) == "?"
    assert _retry_at(pipe, n) == recovered_at + pipe.late_ms + 1
    work.sweep(pipe)
    dispatcher.drain(pipe)
    assert _confirmed(pipe, n) == "?"  # nothing pushed before its time
    before = len(fake_voicenter.pushed())
    clock.advance(pipe.late_ms / 1000 + 1)
    fake_voicenter.blacklist.discard(n[1:])  # A's remove landed meanwhile
    work.sweep(pipe)
    dispatcher.drain(pipe)
    assert len(fake_voicenter.pushed()) == before + 1
    assert n[1:] in fake_voicenter.blacklist
    assert _confirmed(pipe, n) == "blocked:3"
    assert not pipe.store.redis.hexists(pipe.store.key("late", "voicenter"), n)


def test_a_chunk_pushed_by_two_deliveries_is_confirmed_once_the_other_cannot_land(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    n, chunk = _leased_add(pipe, dispatcher)
    assert pipe.store.open_chunk(chunk.id, pipe.settings.lease_seconds) is not None  # again
    assert _done(pipe, chunk) == "ok"
    assert _confirmed(pipe, n) == "?"
    assert _retry_at(pipe, n) == pipe.store.now_ms() + pipe.late_ms + 1
    assert not pipe.store.redis.hexists(pipe.store.key("opened"), chunk.id)
    settle(pipe, dispatcher, clock)
    assert _confirmed(pipe, n) == "blocked:1"


def test_a_chunk_pushed_once_is_confirmed_at_once(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    n, chunk = _leased_add(pipe, dispatcher)
    assert _done(pipe, chunk) == "ok"
    assert _confirmed(pipe, n) == "blocked:1"
    assert _retry_at(pipe, n) is None
    assert not pipe.store.redis.hexists(pipe.store.key("opened"), chunk.id)


def test_recovery_rechecks_the_lease_in_the_same_script(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    accept(pipe, add(*numbers(2)))
    dispatcher.tasks.clear()
    chunk = _claim(pipe, Action.ADD)
    clock.advance(pipe.settings.lease_seconds + 1)
    assert pipe.store.expired_leases() == [chunk.id]
    # The push renews between the listing and the release: the chunk is alive.
    assert pipe.store.renew(chunk.id, pipe.settings.lease_seconds)
    status, _ = pipe.store.release(chunk.id, recover=True, late_ms=pipe.late_ms)
    assert status == "alive"
    assert pipe.store.counts(["voicenter"])["voicenter"]["in_flight"] == 2
    assert work.recover(pipe) == 0


def test_the_lease_starts_when_the_push_starts_not_when_the_chunk_was_queued(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    accept(pipe, add(*numbers(3)))
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)
    push = next(args for kind, args in dispatcher.tasks if kind == "push")
    dispatcher.tasks.clear()
    clock.advance(pipe.settings.lease_seconds - 1)  # waiting in the queue all this time

    def slow_request() -> None:
        clock.advance(5)
        assert work.recover(pipe) == 0  # the push's own lease has only just started

    fake_voicenter.after_request = slow_request
    counts = work.push(pipe, push[0])
    assert counts["done"] == 3 and counts["orphan"] == 0


def test_a_per_number_push_renews_its_lease_before_every_request(clock: FakeClock) -> None:
    # Issue 13, item 2: 25 requests of 10 s each outlive a 120 s lease.
    import random

    import fakeredis

    from tests.conftest import make_settings
    from worker.runtime.wiring import build_pipeline

    fake = make_fake("voodoosms")
    router = Router({"voodoosms": fake})
    dispatcher = QueueDispatcher()
    pipe = build_pipeline(
        make_settings(env_for("voodoosms", "http://voodoosms.test"), lease_seconds=120),
        client=fakeredis.FakeRedis(),
        http=router.client(),
        dispatcher=dispatcher,
        clock=clock,
        rng=random.Random(1),
    )
    recovered: list[int] = []

    def ten_seconds(request: Any) -> None:
        clock.advance(10)
        recovered.append(work.recover(pipe))

    original = fake.handle

    def handle(*args: Any) -> Any:
        answer = original(*args)
        ten_seconds(args)
        return answer

    fake.handle = handle  # type: ignore[method-assign]
    accept(pipe, add(*numbers(25)))
    dispatcher.drain(pipe)
    assert len(fake.listed()) == 25
    assert sum(recovered) == 0
    assert len(fake.numbers_sent()) == 25  # each number once: no chunk was recovered
    assert all(
        pipe.store.provider_view(n, ["voodoosms"])["voodoosms"]["confirmed"] == "blocked:1"
        for n in numbers(25)
    )


def test_an_orphan_add_only_success_is_kept_and_never_pushed_again(clock: FakeClock) -> None:
    import random

    import fakeredis

    from tests.conftest import make_settings
    from tests.fakes.providers import CALL
    from tests.fakes.weya import FakeWeya
    from worker.runtime.wiring import build_pipeline

    fake = make_fake("weya")
    assert isinstance(fake, FakeWeya)
    router = Router({"weya": fake})
    dispatcher = QueueDispatcher()
    pipe = build_pipeline(
        make_settings(env_for("weya", "http://weya.test")),
        client=fakeredis.FakeRedis(),
        http=router.client(),
        dispatcher=dispatcher,
        clock=clock,
        rng=random.Random(1),
    )
    n = numbers(1)[0]
    accept(pipe, Event("dnc", Action.ADD, [PhoneInput(n)], context=CALL))
    dispatcher.tasks.clear()
    a = _claim(pipe, Action.ADD, "weya")
    clock.advance(pipe.settings.lease_seconds + 1)
    work.recover(pipe)  # stages the add again
    fake.listed().add(n[1:])  # but A's add did land: the admin got their email
    assert _done(pipe, a) == "orphan"
    assert _confirmed(pipe, n, "weya") == "blocked:1"
    settle(pipe, dispatcher, clock)
    assert fake.requests == []  # not pushed a second time


def _dead_lettered_after_a_recovery(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> str:
    """A number whose chunk was recovered (a late mark), then refused: dead-lettered."""
    n = numbers(1)[0]
    accept(pipe, add(n))
    dispatcher.tasks.clear()
    _claim(pipe, Action.ADD)
    clock.advance(pipe.settings.lease_seconds + 1)
    assert work.recover(pipe) == 1
    dispatcher.tasks.clear()
    chunk = _claim(pipe, Action.ADD)
    refused = {n: ("permanent", "rejected", "", 0, 0.5, 0, 0)}
    pipe.store.complete(chunk, refused, pipe.complete_options())
    assert pipe.store.redis.hexists(pipe.store.key("late", "voicenter"), n)
    return n


def test_a_purge_keeps_a_late_mark_whose_time_is_still_running(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    # Nothing pushes a purged number there again until it changes: a mark left would stay.
    n = _dead_lettered_after_a_recovery(pipe, dispatcher, clock)
    late = pipe.store.key("late", "voicenter")
    pipe.store.purge([f"voicenter|{n}"], "ops")  # within the window: kept for the next push
    assert pipe.store.redis.hexists(late, n)
    clock.advance(pipe.late_ms / 1000 + 1)
    accept(pipe, remove(clock, n))
    accept(pipe, add(n))
    settle(pipe, dispatcher, clock)
    assert _confirmed(pipe, n) == "blocked:3"
    assert not pipe.store.redis.hexists(late, n)  # the push after it cleared it


def test_a_purge_after_the_late_window_drops_the_mark(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    n = _dead_lettered_after_a_recovery(pipe, dispatcher, clock)
    clock.advance(pipe.late_ms / 1000 + 1)
    pipe.store.purge([f"voicenter|{n}"], "ops")
    assert not pipe.store.redis.hexists(pipe.store.key("late", "voicenter"), n)


def test_a_request_that_may_still_land_makes_the_next_push_wait_for_it(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    # Found by the eleventh review: an add answered without a word about the number
    # (`may_land`), then a remove answered done: the add may still be carried out after it.
    n, a = _leased_add(pipe, dispatcher)
    odd = {n: ("retry", "not_in_answer", "", 0, 0.5, 0, 1)}
    pipe.store.complete(a, odd, pipe.complete_options())
    clock.advance(1)
    accept(pipe, remove(clock, n))
    dispatcher.tasks.clear()
    b = _claim(pipe, Action.REMOVE)
    assert _done(pipe, b) == "ok"
    assert _confirmed(pipe, n) == "?"
    assert _retry_at(pipe, n) == pipe.store.now_ms() - 1000 + pipe.late_ms + 1
