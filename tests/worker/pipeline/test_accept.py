"""Accept and the ledger: idempotency, last-writer-wins and its safety rules, staging."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aredis

from tests.conftest import FakeClock, async_twin
from tests.fakes.dispatch import QueueDispatcher
from worker.pipeline.accept import (
    INLINE_PHONES,
    AcceptError,
    Event,
    PhoneInput,
    StoreUnavailableError,
    accept,
    accept_async,
)
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.embedded import free_port
from worker.state.async_accept import AsyncAccept

N = "+972501234567"


def at(clock: FakeClock, offset: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.now + offset, tz=UTC)


def add(*phones: str, **kw: Any) -> Event:
    return Event("api", Action.ADD, [PhoneInput(p) for p in phones], **kw)


def remove(*phones: str, **kw: Any) -> Event:
    return Event("api", Action.REMOVE, [PhoneInput(p) for p in phones], **kw)


def test_accept_writes_ledger_audit_and_stages(ctx: Context) -> None:
    result = accept(ctx, add(N, "not-a-number", reason="pressed 9"))
    assert result.accepted == 1
    assert result.phones[1].status == "rejected"
    assert result.phones[1].reason == "contains_letters"
    ledger = ctx.store.ledger(N)
    assert ledger["s"] == "blocked"
    assert ledger["v"] == "1"
    audit = ctx.store.audit(N)
    assert audit[0]["ev"] == result.event_id
    assert audit[0]["rsn"] == "pressed 9"
    assert ctx.store.provider_view(N, ["voicenter"])["voicenter"]["staged"] == "add"


def test_same_key_same_body_is_a_noop(ctx: Context, dispatcher: QueueDispatcher) -> None:
    first = accept(ctx, add(N, idempotency_key="k1"))
    sent = len(dispatcher.sent)
    again = accept(ctx, add(N, idempotency_key="k1"))
    assert again.duplicate
    assert again.event_id == first.event_id
    assert len(dispatcher.sent) == sent
    assert len(ctx.store.audit(N)) == 1


def test_same_key_different_body_is_409(ctx: Context) -> None:
    accept(ctx, add(N, idempotency_key="k1"))
    with pytest.raises(AcceptError) as caught:
        accept(ctx, add("+972501234568", idempotency_key="k1"))
    assert caught.value.reason == "idempotency_conflict"


def test_keys_are_scoped_by_source(ctx: Context) -> None:
    accept(ctx, add(N, idempotency_key="k1"))
    other = Event("crm", Action.ADD, [PhoneInput("+972501234568")], idempotency_key="k1")
    assert not accept(ctx, other).duplicate


def test_without_a_key_the_body_hash_is_the_key(ctx: Context) -> None:
    accept(ctx, add(N, reason="x"))
    assert accept(ctx, add(N, reason="x")).duplicate
    assert not accept(ctx, add(N, reason="y")).duplicate


def test_remove_without_occurred_at_is_refused(ctx: Context) -> None:
    with pytest.raises(AcceptError) as caught:
        accept(ctx, remove(N))
    assert caught.value.reason == "remove_needs_occurred_at"


def test_a_remove_older_than_the_add_loses(ctx: Context, clock: FakeClock) -> None:
    accept(ctx, add(N, occurred_at=at(clock, -10)))  # T2
    result = accept(ctx, remove(N, occurred_at=at(clock, -20)))  # T1 < T2, arrives last
    assert result.phones[0].ledger == "stale"
    assert ctx.store.ledger(N)["s"] == "blocked"
    view = ctx.store.provider_view(N, ["voicenter"])["voicenter"]
    assert view["staged"] == "add"


def test_a_newer_remove_wins_and_replaces_the_staged_add(ctx: Context, clock: FakeClock) -> None:
    accept(ctx, add(N, occurred_at=at(clock, -20)))
    accept(ctx, remove(N, occurred_at=at(clock, -10)))
    assert ctx.store.ledger(N)["s"] == "unblocked"
    assert ctx.store.provider_view(N, ["voicenter"])["voicenter"]["staged"] == "remove"
    assert ctx.store.counts(["voicenter"])["voicenter"]["staged_add"] == 0


def test_on_a_tie_the_add_wins(ctx: Context, clock: FakeClock) -> None:
    when = at(clock, -5)
    accept(ctx, add(N, occurred_at=when))
    assert accept(ctx, remove(N, occurred_at=when)).phones[0].ledger == "stale"
    ctx2_state = ctx.store.ledger(N)["s"]
    assert ctx2_state == "blocked"


def test_a_future_occurred_at_is_clamped(ctx: Context, clock: FakeClock) -> None:
    accept(ctx, add(N, occurred_at=at(clock, 10 * 365 * 86400)))
    t = int(ctx.store.ledger(N)["t"])
    assert t <= int((clock.now + ctx.settings.clock_skew_seconds) * 1000)
    # ... so a remove made after the skew window can still lift it.
    clock.advance(ctx.settings.clock_skew_seconds + 1)
    accept(ctx, remove(N, occurred_at=at(clock)))
    assert ctx.store.ledger(N)["s"] == "unblocked"


def test_a_remove_dated_ahead_never_beats_an_opt_out_received_after_it(
    ctx: Context, clock: FakeClock
) -> None:
    # Found by review: an admin tool sending local time without an offset (UTC+3 read as
    # UTC) dated a remove up to the skew ahead, and the customer's opt-out two minutes
    # later was "stale": lost, with nothing to repair it.
    accept(ctx, add(N))
    clock.advance(1)
    naive_local = (at(clock) + timedelta(hours=3)).replace(tzinfo=None)
    accept(ctx, remove(N, occurred_at=naive_local))
    assert ctx.store.ledger(N)["s"] == "unblocked"
    clock.advance(120)
    again = accept(ctx, add(N))
    assert again.phones[0].ledger == "applied"
    assert ctx.store.ledger(N)["s"] == "blocked"


def test_blocks_merge_to_the_longest_expiry(ctx: Context, clock: FakeClock) -> None:
    accept(ctx, add(N))  # permanent
    result = accept(ctx, add(N, expires_at=at(clock, 3600), reason="temp"))
    assert result.phones[0].ledger == "unchanged"
    assert "x" not in ctx.store.ledger(N)  # for good: no expiry field
    other = "+972501234568"
    accept(ctx, add(other, expires_at=at(clock, 3600)))
    accept(ctx, add(other, expires_at=at(clock, 7200), reason="longer"))
    assert int(ctx.store.ledger(other)["x"]) == int((clock.now + 7200) * 1000)


def test_an_unchanged_number_already_confirmed_is_not_pushed_again(
    ctx: Context, dispatcher: QueueDispatcher
) -> None:
    accept(ctx, add(N))
    dispatcher.drain(ctx)
    accept(ctx, add(N, reason="again"))
    assert ctx.store.provider_view(N, ["voicenter"])["voicenter"]["staged"] is None


def test_no_valid_phone_is_422(ctx: Context) -> None:
    with pytest.raises(AcceptError) as caught:
        accept(ctx, add("abc", "12"))
    assert caught.value.reason == "no_valid_phones"


def test_duplicate_phones_in_one_event_count_once(ctx: Context) -> None:
    result = accept(ctx, add(N, "0501234567", "972501234567"))
    assert result.accepted == 3
    assert ctx.store.ledger(N)["v"] == "1"


def test_expires_at_in_the_past_is_refused(ctx: Context, clock: FakeClock) -> None:
    with pytest.raises(AcceptError):
        accept(ctx, add(N, expires_at=at(clock, -1)))


def test_events_with_no_provider_still_land_in_the_ledger(make_ctx: Any) -> None:
    ctx = make_ctx(voicenter_api_code=None)
    accept(ctx, add(N))
    assert ctx.store.ledger(N)["s"] == "blocked"


def test_timezone_naive_times_are_utc(ctx: Context, clock: FakeClock) -> None:
    naive = datetime.fromtimestamp(clock.now - 60, tz=UTC).replace(tzinfo=None)
    accept(ctx, add(N, occurred_at=naive))
    assert int(ctx.store.ledger(N)["t"]) == int((clock.now - 60) * 1000)


def test_one_hour_later_remove_with_time_lifts(ctx: Context, clock: FakeClock) -> None:
    accept(ctx, add(N))
    clock.advance(3600)
    accept(ctx, remove(N, occurred_at=at(clock) - timedelta(seconds=1)))
    assert ctx.store.ledger(N)["s"] == "unblocked"


def test_a_large_event_is_written_in_parts_and_still_idempotent(
    ctx: Context, dispatcher: QueueDispatcher
) -> None:
    phones = [f"+97250{i:07d}" for i in range(2500)]
    first = accept(ctx, add(*phones, idempotency_key="big"))
    assert first.accepted == 2500
    assert ctx.store.counts(["voicenter"])["voicenter"]["staged_add"] == 2500
    assert all(p.ledger == "applied" for p in first.phones)
    again = accept(ctx, add(*phones, idempotency_key="big"))
    assert again.duplicate and again.event_id == first.event_id
    with pytest.raises(AcceptError):
        accept(ctx, add(*phones[:10], idempotency_key="big"))
    flushes = [a for k, a in dispatcher.sent if k == "flush"]
    assert sum(1 for a in flushes if a[2] == "all") == 1  # one linger flush for one batch


def test_a_crash_between_parts_is_redone_whole_on_retry(ctx: Context) -> None:
    phones = [f"+97250{i:07d}" for i in range(1500)]
    original = ctx.store.accept
    calls = {"n": 0}

    def crash_on_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("redis went away")
        return original(*args, **kwargs)

    ctx.store.accept = crash_on_second  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        accept(ctx, add(*phones, idempotency_key="k"))
    ctx.store.accept = original  # type: ignore[method-assign]
    retry = accept(ctx, add(*phones, idempotency_key="k"))
    assert not retry.duplicate  # the key was not recorded: the retry wrote everything
    assert all(ctx.store.ledger(p)["s"] == "blocked" for p in phones[::100])


# -- from an event loop (the HTTP API): accept_async and its group commit -----------------


class CountingAsyncRedis(fakeredis.FakeAsyncRedis):
    """Counts the pipelines sent: each one is a Redis round trip (and fsync)."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        CountingAsyncRedis.pipelines += 1
        return super().pipeline(*args, **kwargs)


@pytest.fixture
def aio_ctx(make_ctx: Any) -> Context:
    ctx: Context = make_ctx(aio=True)
    ctx.ensure_registered()  # a process's first event registers targets through a thread
    return ctx


def test_accept_async_writes_stages_and_schedules_like_accept(
    aio_ctx: Context, dispatcher: QueueDispatcher
) -> None:
    result = asyncio.run(accept_async(aio_ctx, add(N, "nope", reason="pressed 9")))
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.phones[0].ledger == "applied"
    assert aio_ctx.store.ledger(N)["s"] == "blocked"
    assert aio_ctx.store.audit(N)[0]["ev"] == result.event_id
    assert aio_ctx.store.provider_view(N, ["voicenter"])["voicenter"]["staged"] == "add"
    # It opened the batch, so its linger flush is enqueued.
    assert [args[:3] for kind, args in dispatcher.sent if kind == "flush"] == [
        ("voicenter", Action.ADD, "all")
    ]


def test_concurrent_events_share_round_trips_and_keep_their_own_answers(
    make_ctx: Any, redis_fake: fakeredis.FakeRedis
) -> None:
    ctx: Context = make_ctx()
    ctx.async_accept = AsyncAccept(ctx.store, async_twin(redis_fake, CountingAsyncRedis))
    ctx.ensure_registered()
    CountingAsyncRedis.pipelines = 0
    numbers = [f"+97250{i:07d}" for i in range(1000, 1060)]

    async def many() -> list[Any]:
        events = [add(n) for n in numbers]
        # The same event twice in the same group: the second is the duplicate of the first.
        events += [add(N, idempotency_key="twice"), add(N, idempotency_key="twice")]
        return await asyncio.gather(*(accept_async(ctx, e) for e in events))

    results = asyncio.run(many())
    assert CountingAsyncRedis.pipelines < len(results) / 10
    assert [r.phones[0].phone for r in results[:60]] == numbers
    assert all(not r.duplicate and r.phones[0].ledger == "applied" for r in results[:60])
    assert len({r.event_id for r in results[:60]}) == 60
    first, second = results[60:]
    assert (first.duplicate, second.duplicate) == (False, True)
    assert second.event_id == first.event_id
    assert all(ctx.store.ledger(n)["s"] == "blocked" for n in [*numbers, N])
    assert len(ctx.store.audit(N)) == 1


def test_an_emptied_script_cache_is_reloaded(aio_ctx: Context) -> None:
    async def twice() -> None:
        await accept_async(aio_ctx, add(N))
        aio_ctx.store.redis.script_flush()  # as after a Redis restart
        await accept_async(aio_ctx, add("+972501234568"))

    asyncio.run(twice())
    assert aio_ctx.store.ledger("+972501234568")["s"] == "blocked"


def test_a_request_that_goes_away_does_not_lose_its_event_or_others(aio_ctx: Context) -> None:
    numbers = [f"+97250{i:07d}" for i in range(2000, 2010)]

    async def cancel_one() -> list[Any]:
        tasks = [asyncio.create_task(accept_async(aio_ctx, add(n))) for n in numbers]
        await asyncio.sleep(0)  # all ten are queued for the writer
        tasks[3].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(cancel_one())
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(r.accepted == 1 for i, r in enumerate(results) if i != 3)
    # Sent before its request went away: written all the same (a retry is a duplicate).
    assert all(aio_ctx.store.ledger(n)["s"] == "blocked" for n in numbers)


def test_redis_down_refuses_every_waiting_event_with_503(make_ctx: Any) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ctx: Context = make_ctx()
    ctx.async_accept = AsyncAccept(
        ctx.store, lambda: aredis.Redis.from_url(dead, socket_connect_timeout=0.5)
    )
    ctx.ensure_registered()

    async def five() -> list[Any]:
        events = [add(f"+97250{i:07d}") for i in range(3000, 3005)]
        return await asyncio.gather(*(accept_async(ctx, e) for e in events),
                                    return_exceptions=True)  # fmt: skip

    results = asyncio.run(five())
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert not ctx.store.ledger("+972503000000")


def test_large_events_are_accepted_in_a_thread_not_on_the_loop(make_ctx: Any) -> None:
    # The event-loop client is dead: only an event that takes the thread path can succeed.
    ctx: Context = make_ctx()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ctx.async_accept = AsyncAccept(ctx.store, lambda: aredis.Redis.from_url(dead))
    ctx.ensure_registered()
    phones = [f"+97250{i:07d}" for i in range(4000, 4000 + INLINE_PHONES + 1)]
    result = asyncio.run(accept_async(ctx, add(*phones)))
    assert result.accepted == len(phones)
    with pytest.raises(StoreUnavailableError):
        asyncio.run(accept_async(ctx, add(N)))


# -- idempotency keys: reserved from a large event's first part; keyless repeats ----------


def test_a_different_body_under_a_key_cut_short_is_409_and_the_retry_finishes(
    ctx: Context,
) -> None:
    # Issue 13, item 8: a crash after part 1; then another body under the same key; then the
    # original's retry. Before, the other body was accepted and the retry got 409.
    phones = [f"+97250{i:07d}" for i in range(1500)]
    original = ctx.store.accept
    calls = {"n": 0}

    def crash_on_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("redis went away")
        return original(*args, **kwargs)

    ctx.store.accept = crash_on_second  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        accept(ctx, add(*phones, idempotency_key="k"))
    ctx.store.accept = original  # type: ignore[method-assign]
    with pytest.raises(AcceptError) as caught:
        accept(ctx, add("+972599999999", idempotency_key="k"))
    assert caught.value.reason == "idempotency_conflict"
    assert ctx.store.ledger("+972599999999") == {}
    retry = accept(ctx, add(*phones, idempotency_key="k"))
    assert not retry.duplicate
    assert all(ctx.store.ledger(p)["s"] == "blocked" for p in phones)
    audit_ids = {ctx.store.audit(p)[0]["ev"] for p in (phones[0], phones[-1])}
    assert audit_ids == {retry.event_id}  # one event, under its first id
    again = accept(ctx, add(*phones, idempotency_key="k"))
    assert again.duplicate and again.event_id == retry.event_id


def test_two_different_large_bodies_under_one_key_cannot_both_be_accepted(ctx: Context) -> None:
    # Issue 13, item 8: the second body's first part meets the first's reservation.
    ours = [f"+97250{i:07d}" for i in range(1200)]
    theirs = [f"+97251{i:07d}" for i in range(1200)]
    original = ctx.store.accept
    calls = {"n": 0}

    def interleave(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # between our parts, the other body arrives
            with pytest.raises(AcceptError) as caught:
                accept(ctx, add(*theirs, idempotency_key="k"))
            assert caught.value.reason == "idempotency_conflict"
        return original(*args, **kwargs)

    ctx.store.accept = interleave  # type: ignore[method-assign]
    result = accept(ctx, add(*ours, idempotency_key="k"))
    ctx.store.accept = original  # type: ignore[method-assign]
    assert result.accepted == 1200
    assert ctx.store.ledger(theirs[0]) == {}


def test_a_keyless_repeat_of_an_add_after_a_remove_blocks_again(
    ctx: Context, clock: FakeClock
) -> None:
    # Issue 13, item 6: add (no key, no time); an admin remove; the same add body again.
    first = accept(ctx, add(N, reason="pressed 9"))
    clock.advance(60)
    accept(ctx, remove(N, occurred_at=at(clock)))
    assert ctx.store.ledger(N)["s"] == "unblocked"
    clock.advance(60)
    again = accept(ctx, add(N, reason="pressed 9"))
    assert not again.duplicate and again.event_id != first.event_id
    assert ctx.store.ledger(N)["s"] == "blocked"


def test_a_keyless_repeat_of_a_permanent_add_over_a_temporary_block_is_taken(
    ctx: Context, clock: FakeClock
) -> None:
    # Found by review: a permanent opt-out, an admin remove, a two-hour "snooze" block,
    # then the permanent opt-out again: a duplicate (the number was blocked, if only for
    # two hours), and at the snooze's end the number was unblocked.
    form = add(N, reason="stop calling me")
    accept(ctx, form)
    clock.advance(60)
    accept(ctx, remove(N, occurred_at=at(clock)))
    clock.advance(60)
    accept(ctx, add(N, reason="snooze", expires_at=at(clock, 7200)))
    clock.advance(600)
    again = accept(ctx, form)
    assert not again.duplicate
    assert ctx.store.ledger(N)["s"] == "blocked"
    assert "x" not in ctx.store.ledger(N)  # for good


def test_a_keyless_retry_of_a_standing_add_is_still_a_duplicate(
    ctx: Context, clock: FakeClock
) -> None:
    first = accept(ctx, add(N, reason="pressed 9"))
    again = accept(ctx, add(N, reason="pressed 9"))
    assert again.duplicate and again.event_id == first.event_id
    snooze = add("+972501234568", expires_at=at(clock, 7200))
    first = accept(ctx, snooze)
    assert accept(ctx, snooze).event_id == first.event_id  # a temporary one too


def test_a_derived_key_is_kept_for_hours_a_senders_key_for_days(ctx: Context) -> None:
    accept(ctx, add(N, reason="derived"))
    accept(ctx, add("+972501234568", idempotency_key="theirs"))
    ttls = {
        key.decode().rsplit(":", 1)[1][:6]: ctx.store.redis.ttl(key)
        for key in ctx.store.redis.scan_iter(match=ctx.store.key("idem", "api", "*"))
    }
    assert ttls.pop("theirs") > 29 * 86400
    (derived,) = ttls.values()
    assert 0 < derived <= ctx.settings.derived_key_ttl_hours * 3600


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00", "1969-12-31T23:59:59Z", "1970-01-01"])
def test_an_add_dated_before_2000_is_refused_naming_the_field(ctx: Context, when: str) -> None:
    # Issue 13, item 5: it was answered 202 "stale" and the number stayed unblocked.
    with pytest.raises(AcceptError) as caught:
        accept(ctx, add(N, occurred_at=datetime.fromisoformat(when)))
    assert caught.value.reason == "occurred_at_out_of_range"
    assert "occurred_at" in caught.value.message
    assert ctx.store.ledger(N) == {}
