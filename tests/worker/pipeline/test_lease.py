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
from worker.pipeline import push as pushing
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.records import Chunk, ItemResult


def _claim(ctx: Context, action: Action, target: str = "voicenter") -> Chunk:
    provider = target.split(":", 1)[0]
    claimed = ctx.store.claim(
        target, provider, action, size=100, lease_seconds=ctx.settings.lease_seconds,
        mode=work.ALL, linger_ms=0, max_chunks=1,
    )  # fmt: skip
    assert claimed.status == "ok" and len(claimed.chunks) == 1, claimed
    opened = ctx.store.open_chunk(claimed.chunks[0], ctx.settings.lease_seconds)
    assert opened is not None
    return opened.chunk


def _done(ctx: Context, chunk: Chunk) -> str:
    results = {item.e164: ItemResult("done", "", jitter=0.5) for item in chunk.items}
    completion = ctx.store.complete(chunk, results, ctx.complete_options())
    work.schedule(ctx, completion.staged)
    return completion.status


def _confirmed(ctx: Context, n: str, target: str = "voicenter") -> Any:
    return ctx.store.provider_view(n, [target])[target]["confirmed"]


def _leased_add(ctx: Context, dispatcher: QueueDispatcher) -> tuple[str, Chunk]:
    """A number accepted, and its add leased by a worker (not pushed yet)."""
    n = numbers(1)[0]
    accept(ctx, add(n))
    dispatcher.tasks.clear()
    return n, _claim(ctx, Action.ADD)


def _remove_leased_then_blocked_again(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock, n: str
) -> Chunk:
    """The number is blocked (v1); worker A leases its remove (v2); the customer opts out
    again (v3) while A is in flight. Answers A's chunk."""
    accept(ctx, add(n))
    dispatcher.drain(ctx)
    clock.advance(1)
    accept(ctx, remove(clock, n))
    dispatcher.tasks.clear()
    chunk = _claim(ctx, Action.REMOVE)
    clock.advance(1)
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n)], reason="pressed 9 again"))
    return chunk


def test_a_late_remove_from_a_recovered_chunk_never_gets_the_last_word(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    # Issue 13, item 1. The customer's add is confirmed; a remove (v2) is leased by worker
    # A, whose request is slow; the customer opts out again (v3) while A is in flight.
    n = numbers(1)[0]
    a = _remove_leased_then_blocked_again(ctx, dispatcher, clock, n)
    assert ctx.store.ledger(n)["v"] == "3"
    # A's lease runs out; recovery stages the add; worker B leases it.
    clock.advance(ctx.settings.lease_seconds + 1)
    assert work.recover(ctx) == 1
    dispatcher.tasks.clear()
    b = _claim(ctx, Action.ADD)
    # The provider applies B's add, then A's late remove; A's answer arrives first.
    fake_voicenter.blacklist.add(n[1:])
    fake_voicenter.blacklist.discard(n[1:])
    assert _done(ctx, a) == "orphan"
    # B's answer: the provider may hold A's remove after it, so B confirms nothing...
    assert _done(ctx, b) == "ok"
    assert _confirmed(ctx, n) == "?"
    # ...and the add goes out once more.
    settle(ctx, dispatcher, clock)
    assert n[1:] in fake_voicenter.blacklist
    assert _confirmed(ctx, n) == "blocked:3"


def test_a_late_answer_with_nothing_else_in_flight_pushes_the_ledger_again(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n, a = _leased_add(ctx, dispatcher)
    clock.advance(ctx.settings.lease_seconds + 1)
    work.recover(ctx)
    settle(ctx, dispatcher, clock)  # B pushes the add and confirms it
    assert _confirmed(ctx, n) == "blocked:1"
    clock.advance(1)
    accept(ctx, remove(clock, n))
    settle(ctx, dispatcher, clock)  # C pushes the remove
    assert _confirmed(ctx, n) == "unblocked:2"
    fake_voicenter.blacklist.add(n[1:])  # A's add lands now, long after
    assert _done(ctx, a) == "orphan"
    assert _confirmed(ctx, n) == "?"
    settle(ctx, dispatcher, clock)
    assert n[1:] not in fake_voicenter.blacklist
    assert _confirmed(ctx, n) == "unblocked:2"


def _retry_at(ctx: Context, n: str, target: str = "voicenter") -> float | None:
    score = ctx.store.redis.zscore(ctx.store.key("retry"), f"{target}|{n}")
    return None if score is None else float(score)


def test_a_push_leased_while_a_late_request_may_land_is_confirmed_once_it_cannot(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    # Found by the simulation: A's late remove lands after B's add was answered, and A's
    # worker dies before its own answer, so nothing ever reports it. B is confirmed by one
    # more push, not at once (it could be overtaken just the same), but once A's request can
    # no longer land: a lease and an HTTP timeout after recovery.
    n = numbers(1)[0]
    _remove_leased_then_blocked_again(ctx, dispatcher, clock, n)  # A: never heard of again
    clock.advance(ctx.settings.lease_seconds + 1)
    recovered_at = ctx.store.now_ms()
    assert work.recover(ctx) == 1
    dispatcher.tasks.clear()
    b = _claim(ctx, Action.ADD)
    assert _done(ctx, b) == "ok"
    assert _confirmed(ctx, n) == "?"
    assert _retry_at(ctx, n) == recovered_at + ctx.late_ms + 1
    work.sweep(ctx)
    dispatcher.drain(ctx)
    assert _confirmed(ctx, n) == "?"  # nothing pushed before its time
    before = len(fake_voicenter.pushed())
    clock.advance(ctx.late_ms / 1000 + 1)
    fake_voicenter.blacklist.discard(n[1:])  # A's remove landed meanwhile
    work.sweep(ctx)
    dispatcher.drain(ctx)
    assert len(fake_voicenter.pushed()) == before + 1
    assert n[1:] in fake_voicenter.blacklist
    assert _confirmed(ctx, n) == "blocked:3"
    assert not ctx.store.redis.hexists(ctx.store.key("late", "voicenter"), n)


def test_a_chunk_pushed_by_two_deliveries_is_confirmed_once_the_other_cannot_land(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    n, chunk = _leased_add(ctx, dispatcher)
    assert ctx.store.open_chunk(chunk.id, ctx.settings.lease_seconds) is not None  # again
    assert _done(ctx, chunk) == "ok"
    assert _confirmed(ctx, n) == "?"
    assert _retry_at(ctx, n) == ctx.store.now_ms() + ctx.late_ms + 1
    assert not ctx.store.redis.hexists(ctx.store.key("opened"), chunk.id)
    settle(ctx, dispatcher, clock)
    assert _confirmed(ctx, n) == "blocked:1"


def test_a_chunk_pushed_once_is_confirmed_at_once(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    n, chunk = _leased_add(ctx, dispatcher)
    assert _done(ctx, chunk) == "ok"
    assert _confirmed(ctx, n) == "blocked:1"
    assert _retry_at(ctx, n) is None
    assert not ctx.store.redis.hexists(ctx.store.key("opened"), chunk.id)


def test_recovery_rechecks_the_lease_in_the_same_script(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    accept(ctx, add(*numbers(2)))
    dispatcher.tasks.clear()
    chunk = _claim(ctx, Action.ADD)
    clock.advance(ctx.settings.lease_seconds + 1)
    assert ctx.store.expired_leases() == [chunk.id]
    # The push renews between the listing and the release: the chunk is alive.
    assert ctx.store.renew(chunk.id, ctx.settings.lease_seconds)
    released = ctx.store.release(chunk.id, recover=True, late_ms=ctx.late_ms)
    assert released.status == "alive"
    assert ctx.store.counts(["voicenter"])["voicenter"]["in_flight"] == 2
    assert work.recover(ctx) == 0


def test_the_lease_starts_when_the_push_starts_not_when_the_chunk_was_queued(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    accept(ctx, add(*numbers(3)))
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)
    push = next(args for kind, args in dispatcher.tasks if kind == "push")
    dispatcher.tasks.clear()
    clock.advance(ctx.settings.lease_seconds - 1)  # waiting in the queue all this time

    def slow_request() -> None:
        clock.advance(5)
        assert work.recover(ctx) == 0  # the push's own lease has only just started

    fake_voicenter.after_request = slow_request
    counts = pushing.push(ctx, push[0])
    assert counts["done"] == 3 and counts["orphan"] == 0


def test_a_per_number_push_renews_its_lease_before_every_request(clock: FakeClock) -> None:
    # Issue 13, item 2: 25 requests of 10 s each outlive a 120 s lease.
    import random

    import fakeredis

    from tests.conftest import make_settings
    from worker.runtime.wiring import build_context

    fake = make_fake("voodoosms")
    router = Router({"voodoosms": fake})
    dispatcher = QueueDispatcher()
    ctx = build_context(
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
        recovered.append(work.recover(ctx))

    original = fake.handle

    def handle(*args: Any) -> Any:
        answer = original(*args)
        ten_seconds(args)
        return answer

    fake.handle = handle  # type: ignore[method-assign]
    accept(ctx, add(*numbers(25)))
    dispatcher.drain(ctx)
    assert len(fake.listed()) == 25
    assert sum(recovered) == 0
    assert len(fake.numbers_sent()) == 25  # each number once: no chunk was recovered
    assert all(
        ctx.store.provider_view(n, ["voodoosms"])["voodoosms"]["confirmed"] == "blocked:1"
        for n in numbers(25)
    )


def test_an_orphan_add_only_success_is_kept_and_never_pushed_again(clock: FakeClock) -> None:
    import random

    import fakeredis

    from tests.conftest import make_settings
    from tests.fakes.providers import CALL
    from tests.fakes.weya import FakeWeya
    from worker.runtime.wiring import build_context

    fake = make_fake("weya")
    assert isinstance(fake, FakeWeya)
    router = Router({"weya": fake})
    dispatcher = QueueDispatcher()
    ctx = build_context(
        make_settings(env_for("weya", "http://weya.test")),
        client=fakeredis.FakeRedis(),
        http=router.client(),
        dispatcher=dispatcher,
        clock=clock,
        rng=random.Random(1),
    )
    n = numbers(1)[0]
    accept(ctx, Event("dnc", Action.ADD, [PhoneInput(n)], context=CALL))
    dispatcher.tasks.clear()
    a = _claim(ctx, Action.ADD, "weya")
    clock.advance(ctx.settings.lease_seconds + 1)
    work.recover(ctx)  # stages the add again
    fake.listed().add(n[1:])  # but A's add did land: the admin got their email
    assert _done(ctx, a) == "orphan"
    assert _confirmed(ctx, n, "weya") == "blocked:1"
    settle(ctx, dispatcher, clock)
    assert fake.requests == []  # not pushed a second time


def _dead_lettered_after_a_recovery(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> str:
    """A number whose chunk was recovered (a late mark), then refused: dead-lettered."""
    n = numbers(1)[0]
    accept(ctx, add(n))
    dispatcher.tasks.clear()
    _claim(ctx, Action.ADD)
    clock.advance(ctx.settings.lease_seconds + 1)
    assert work.recover(ctx) == 1
    dispatcher.tasks.clear()
    chunk = _claim(ctx, Action.ADD)
    refused = {n: ItemResult("permanent", "rejected", jitter=0.5)}
    ctx.store.complete(chunk, refused, ctx.complete_options())
    assert ctx.store.redis.hexists(ctx.store.key("late", "voicenter"), n)
    return n


def test_a_purge_keeps_a_late_mark_whose_time_is_still_running(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    # Nothing pushes a purged number there again until it changes: a mark left would stay.
    n = _dead_lettered_after_a_recovery(ctx, dispatcher, clock)
    late = ctx.store.key("late", "voicenter")
    ctx.store.purge([f"voicenter|{n}"], "ops")  # within the window: kept for the next push
    assert ctx.store.redis.hexists(late, n)
    clock.advance(ctx.late_ms / 1000 + 1)
    accept(ctx, remove(clock, n))
    accept(ctx, add(n))
    settle(ctx, dispatcher, clock)
    assert _confirmed(ctx, n) == "blocked:3"
    assert not ctx.store.redis.hexists(late, n)  # the push after it cleared it


def test_a_purge_after_the_late_window_drops_the_mark(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    n = _dead_lettered_after_a_recovery(ctx, dispatcher, clock)
    clock.advance(ctx.late_ms / 1000 + 1)
    ctx.store.purge([f"voicenter|{n}"], "ops")
    assert not ctx.store.redis.hexists(ctx.store.key("late", "voicenter"), n)


def test_a_request_that_may_still_land_makes_the_next_push_wait_for_it(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    # Found by the eleventh review: an add answered without a word about the number
    # (`may_land`), then a remove answered done: the add may still be carried out after it.
    n, a = _leased_add(ctx, dispatcher)
    odd = {n: ItemResult("retry", "not_in_answer", jitter=0.5, may_land=True)}
    ctx.store.complete(a, odd, ctx.complete_options())
    clock.advance(1)
    accept(ctx, remove(clock, n))
    dispatcher.tasks.clear()
    b = _claim(ctx, Action.REMOVE)
    assert _done(ctx, b) == "ok"
    assert _confirmed(ctx, n) == "?"
    assert _retry_at(ctx, n) == ctx.store.now_ms() - 1000 + ctx.late_ms + 1
