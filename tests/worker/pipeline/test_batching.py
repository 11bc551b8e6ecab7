"""Batching end to end in-process (fakeredis, the fake Voicenter, a queue dispatcher):
flushes, linger, in-flight caps, recovery, scheduled runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from worker.pipeline import batching as work
from worker.pipeline import push as pushing
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+97250{i:07d}" for i in range(start, start + count)]


def add(*phones: str) -> Event:
    return Event("api", Action.ADD, [PhoneInput(p) for p in phones])


def remove(clock: FakeClock, *phones: str) -> Event:
    when = datetime.fromtimestamp(clock.now, tz=UTC)
    return Event("api", Action.REMOVE, [PhoneInput(p) for p in phones], occurred_at=when)


def settle(ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock, rounds: int = 12) -> None:
    """Run queued work, then let time pass so retries come due, until nothing is left (past
    the late window too: a push that a lost chunk's late request may have overtaken is
    confirmed by one more)."""
    for i in range(rounds + 2):
        dispatcher.drain(ctx)
        wait = ctx.late_ms / 1000 if i == rounds else ctx.settings.retry_max_seconds
        clock.advance(wait + 1)
        work.sweep(ctx)
        dispatcher.drain(ctx)


def test_250_numbers_cost_exactly_three_requests(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(ctx, add(*numbers(250)))
    dispatcher.drain(ctx)
    sizes = [len(r) for r in fake_voicenter.pushed()]
    assert sizes == [100, 100, 50]
    assert fake_voicenter.pushed()[0][0] == "972500000000"
    assert len(fake_voicenter.blacklist) == 250


def test_numbers_from_many_events_share_a_batch(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    for n in numbers(150):
        accept(ctx, add(n))
    dispatcher.drain(ctx)
    assert [len(r) for r in fake_voicenter.pushed()] == [100, 50]


def test_a_linger_flush_with_nothing_staged_sends_nothing(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    assert work.flush(ctx, "voicenter", Action.ADD, work.ALL) == 0
    assert fake_voicenter.requests == []


def test_an_expired_lease_is_recovered_and_delivered(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    accept(ctx, add(*numbers(3)))
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)
    dispatcher.tasks.clear()  # the worker holding the push died
    clock.advance(ctx.settings.lease_seconds + 1)
    assert work.recover(ctx) == 1
    settle(ctx, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 3
    assert ctx.store.counts(["voicenter"])["voicenter"]["in_flight"] == 0


def test_interleaved_adds_and_removes_end_equal_to_the_ledger(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    import random

    rng = random.Random(3)
    batch = numbers(60)
    for _ in range(400):
        n = rng.choice(batch)
        clock.advance(0.01)
        if rng.random() < 0.5:
            accept(ctx, add(n))
        else:
            accept(ctx, remove(clock, n))
        if rng.random() < 0.3:
            # Run a random amount of the queued work, out of order.
            for _ in range(rng.randint(0, 3)):
                if dispatcher.tasks:
                    i = rng.randrange(len(dispatcher.tasks))
                    kind, args = dispatcher.tasks[i]
                    del dispatcher.tasks[i]
                    if kind == "flush":
                        work.flush(ctx, args[0], args[1], args[2])
                    else:
                        pushing.push(ctx, args[0])
    settle(ctx, dispatcher, clock)
    for n in batch:
        state = ctx.store.ledger(n).get("s")
        if state is None:
            continue
        assert (n[1:] in fake_voicenter.blacklist) == (state == "blocked"), n


def test_one_full_flush_per_completed_chunk_not_per_event(
    ctx: Context, dispatcher: QueueDispatcher
) -> None:
    for n in numbers(250):
        accept(ctx, add(n))  # no worker drains the batch meanwhile
    modes = [args[2] for kind, args in dispatcher.sent if kind == "flush"]
    assert modes.count(work.FULL) == 2
    assert modes.count(work.ALL) == 1  # the linger flush of the batch the first event opened


def test_claims_stop_at_the_targets_in_flight_cap(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    cap = ctx.max_in_flight("voicenter")
    accept(ctx, add(*numbers(100 * (cap + 3))))
    dispatcher.tasks.clear()
    assert work.flush(ctx, "voicenter", Action.ADD, work.ALL) == cap
    assert work.flush(ctx, "voicenter", Action.ADD, work.ALL) == 0  # still at the cap
    # The pushes in flight drain the rest themselves, without another flush.
    dispatcher.drain(ctx)
    assert len(fake_voicenter.blacklist) == 100 * (cap + 3)
    assert [len(r) for r in fake_voicenter.pushed()] == [100] * (cap + 3)


def test_no_full_flush_while_the_target_is_at_its_in_flight_cap(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    cap = ctx.max_in_flight("voicenter")
    accept(ctx, add(*numbers(100 * cap)))
    assert work.flush(ctx, "voicenter", Action.ADD, work.ALL) == cap  # now at the cap
    mark = len(dispatcher.sent)
    accept(ctx, add(*numbers(250, start=100 * cap)))  # fills two more chunks
    assert [a for kind, a in dispatcher.sent[mark:] if kind == "flush" and a[2] == work.FULL] == []
    # The pushes in flight take the filled chunks when they are done; the sweep the rest.
    settle(ctx, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 100 * cap + 250


def test_scheduled_runs_queued_back_to_back_collapse_into_one_by_the_servers_clock(
    ctx: Context,
) -> None:
    # Found by the sixteenth review: beat's sweeps carried a Celery expiry, which each
    # worker judged by its host's clock: a worker host 30 s ahead of beat's dropped every
    # sweep (no retries, catch-ups, expiries or linger flushes, and nothing said so). Now
    # runs that beat queued while no worker took them give way to one that ran within half
    # an interval, timed by the server.
    ran: list[int] = []

    def run(p: Context) -> int:
        ran.append(1)
        return 1

    assert [work.on_schedule(ctx, "sweep", 10, run) for _ in range(5)] == [1, 0, 0, 0, 0]
    assert 0 < ctx.store.redis.pttl(ctx.store.key("turn", "sweep")) <= 5000
    assert work.on_schedule(ctx, "recover", 10, run) == 1  # each task its own turn
    assert work.on_schedule(ctx, "flush", 0.02, run) == 1
    time.sleep(0.05)
    assert work.on_schedule(ctx, "flush", 0.02, run) == 1  # half an interval on
    assert len(ran) == 4

    def fail(p: Context) -> int:
        raise redis.ConnectionError("a hiccup")

    with pytest.raises(redis.ConnectionError):
        work.on_schedule(ctx, "reconcile", 10, fail)
    assert work.on_schedule(ctx, "reconcile", 10, run) == 1  # Celery's retry is not skipped

    # A run that outlived its turn gives back none that another run took since.
    def slow_then_fail(p: Context) -> int:
        p.store.redis.delete(p.store.key("turn", "slow"))  # its turn ran out
        assert work.on_schedule(p, "slow", 10, run) == 1  # another run took one
        raise redis.ConnectionError("a hiccup")

    with pytest.raises(redis.ConnectionError):
        work.on_schedule(ctx, "slow", 10, slow_then_fail)
    assert work.on_schedule(ctx, "slow", 10, run) == 0
