"""A chunk's push in-process: per-number outcomes, retries and dead letters, pauses and
holds, stale states, the push chain."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import fakeredis
import httpx
import pytest
import redis

from tests.conftest import FakeClock, make_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import env_for, listed, make_fake
from tests.fakes.server import mock_transport
from tests.fakes.voicenter import ADD, REMOVE, FakeVoicenter
from tests.worker.pipeline.test_batching import add, numbers, remove, settle
from worker.pipeline import batching as work
from worker.pipeline import lease
from worker.pipeline import push as pushing
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.providers.ratelimit import LimitedClient, SharedLimitTransport
from worker.runtime.wiring import build_context
from worker.state.records import ItemResult
from worker.state.store import Store


def test_code_2_retries_that_number_alone_then_succeeds(
    ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
) -> None:
    batch = numbers(5)
    flaky = "972500000002"
    fake_voicenter.flaky[flaky] = 2
    accept(ctx, add(*batch))
    settle(ctx, dispatcher, clock)
    pushed = fake_voicenter.pushed()
    assert len(pushed[0]) == 5
    assert pushed[1:] == [[flaky], [flaky]]
    assert flaky in fake_voicenter.blacklist
    view = ctx.store.provider_view("+" + flaky, ["voicenter"])["voicenter"]
    assert view["confirmed"] == "blocked:1"
    assert view["attempts"] == 0


def test_code_1_dead_letters_with_reason_and_replay_delivers(
    ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
) -> None:
    bad = "972500000001"
    fake_voicenter.permanent.add(bad)
    accept(ctx, add(*numbers(3)))
    settle(ctx, dispatcher, clock)
    dead = ctx.store.dead_letters()
    assert [d["phone"] for d in dead] == ["+" + bad]
    assert dead[0]["reason"] == "bad_format"
    assert dead[0]["action"] == "add"
    assert dead[0]["attempts"] == 1
    assert dead[0]["events"]
    assert len(fake_voicenter.pushed()) == 1  # permanent: never retried on its own

    fake_voicenter.permanent.clear()
    assert work.replay(ctx, [d["id"] for d in dead], "test") == 1
    assert work.replay(ctx, [d["id"] for d in dead], "test") == 1  # twice: staged once
    settle(ctx, dispatcher, clock)
    assert ctx.store.dead_letters() == []
    assert fake_voicenter.pushed()[1:] == [[bad]]
    audit = ctx.store.audit("+" + bad)
    assert any(e.get("act") == "replay" and e.get("by") == "test" for e in audit)


def test_retries_are_capped_then_dead_lettered(
    make_ctx: Any, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    ctx = make_ctx(max_attempts=3)
    fake_voicenter.flaky["972500000000"] = 100
    accept(ctx, add(*numbers(1)))
    settle(ctx, dispatcher, clock)
    assert len(fake_voicenter.pushed()) == 3
    dead = ctx.store.dead_letters()
    assert dead[0]["reason"] == "max_attempts"
    assert "provider_internal_error" in dead[0]["last_error"]


def test_backoff_grows_and_waits(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.flaky["972500000000"] = 100
    accept(ctx, add(*numbers(1)))
    dispatcher.drain(ctx)
    first = ctx.store.provider_view("+972500000000", ["voicenter"])["voicenter"]["retry_at_ms"]
    base_ms = ctx.settings.retry_base_seconds * 1000
    assert 0.5 * base_ms <= first - ctx.store.now_ms() <= base_ms
    work.sweep(ctx)  # not due yet: nothing moves
    dispatcher.drain(ctx)
    assert len(fake_voicenter.pushed()) == 1
    clock.advance(ctx.settings.retry_base_seconds)
    work.sweep(ctx)
    dispatcher.drain(ctx)
    assert len(fake_voicenter.pushed()) == 2
    second = ctx.store.provider_view("+972500000000", ["voicenter"])["voicenter"]["retry_at_ms"]
    assert second - ctx.store.now_ms() >= base_ms  # 2 * base * [0.5, 1]


def test_a_whole_chunk_rejection_is_split_to_isolate_the_bad_number(
    ctx: Context, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    fake = FakeVoicenter()
    poison = "972500000037"

    def handler(method: str, path: str, q: Any, h: Any, body: Any) -> Any:
        phones = [p["Phone"] for p in body["Phones"]]
        if poison in phones:
            return 200, {"ErrorCode": 2, "ErrorMessage": "Phones invalid"}, {}
        return fake.handle(method, path, q, h, body)

    import httpx

    from tests.fakes.server import mock_transport
    from worker.providers.voicenter import VoicenterProvider

    ctx.providers["voicenter"] = VoicenterProvider(
        "good-code", "http://v.test", httpx.Client(transport=mock_transport(handler))
    )
    accept(ctx, add(*numbers(100)))
    settle(ctx, dispatcher, clock)
    assert len(fake.blacklist) == 99
    dead = ctx.store.dead_letters()
    assert [d["phone"] for d in dead] == ["+" + poison]
    assert dead[0]["reason"] == "phones_rejected"


def test_auth_failure_pauses_keeps_numbers_staged_and_resume_delivers(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.key = "rotated"
    accept(ctx, add(*numbers(10)))
    settle(ctx, dispatcher, clock)
    assert "voicenter" in ctx.store.paused()
    assert ctx.store.dead_letters() == []
    assert ctx.store.counts(["voicenter"])["voicenter"]["staged_add"] == 10
    assert fake_voicenter.blacklist == set()
    # While paused, flushes claim nothing.
    accept(ctx, add(*numbers(5, start=10)))
    settle(ctx, dispatcher, clock)
    assert ctx.store.counts(["voicenter"])["voicenter"]["staged_add"] == 15

    fake_voicenter.key = "good-code"
    assert ctx.store.resume("voicenter")
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)
    settle(ctx, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 15
    assert ctx.store.counts(["voicenter"])["voicenter"]["staged_add"] == 0


def test_429_holds_the_provider_until_retry_after(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.http_status = 429
    fake_voicenter.http_status_times = 1
    fake_voicenter.retry_after = "30"
    accept(ctx, add(*numbers(3)))
    dispatcher.drain(ctx)
    assert ctx.store.held_for("voicenter") > 29
    retry_at = ctx.store.provider_view("+972500000000", ["voicenter"])["voicenter"]["retry_at_ms"]
    assert retry_at >= ctx.store.now_ms() + 30_000
    # A new number staged meanwhile is not pushed while the hold lasts.
    accept(ctx, add(*numbers(1, start=50)))
    dispatcher.drain(ctx)
    assert fake_voicenter.requests == []


def test_5xx_retries_the_whole_chunk(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.http_status = 500
    fake_voicenter.http_status_times = 2
    accept(ctx, add(*numbers(4)))
    settle(ctx, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 4
    assert ctx.store.dead_letters() == []


def test_ledger_moving_while_in_flight_restages_the_newest_state(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n = numbers(1)[0]
    accept(ctx, add(n))
    # Claim the add, then a remove lands while the chunk is in flight.
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)
    chunk_id = next(a[0] for k, a in dispatcher.tasks if k == "push")
    clock.advance(1)
    accept(ctx, remove(clock, n))
    assert ctx.store.provider_view(n, ["voicenter"])["voicenter"]["staged"] is None
    # The push re-reads the ledger: the add is stale and is not sent.
    pushing.push(ctx, chunk_id)
    assert fake_voicenter.requests == []
    settle(ctx, dispatcher, clock)
    assert [p for _, p, _ in fake_voicenter.requests] == [REMOVE]
    assert ctx.store.provider_view(n, ["voicenter"])["voicenter"]["confirmed"] == "unblocked:2"


def test_a_change_after_the_request_went_out_is_pushed_after_it(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n = numbers(1)[0]
    accept(ctx, add(n))
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)

    def remove_lands_mid_request() -> None:
        clock.advance(1)
        accept(ctx, remove(clock, n))

    fake_voicenter.after_request = remove_lands_mid_request
    settle(ctx, dispatcher, clock)
    assert [p for _, p, _ in fake_voicenter.requests] == [ADD, REMOVE]
    assert fake_voicenter.blacklist == set()


def test_a_late_push_after_recovery_forces_a_fresh_push(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n = numbers(1)[0]
    accept(ctx, add(n))
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)
    chunk_id = next(a[0] for k, a in dispatcher.tasks if k == "push")
    dispatcher.tasks.clear()
    opened = ctx.store.open_chunk(chunk_id, ctx.settings.lease_seconds)
    assert opened is not None
    chunk = opened.chunk
    clock.advance(ctx.settings.lease_seconds + 1)
    work.recover(ctx)
    settle(ctx, dispatcher, clock)
    # The push that replaced it, and once the recovered chunk's requests can no longer
    # land, one more to confirm it.
    assert len(fake_voicenter.pushed()) == 2
    assert ctx.store.provider_view(n, ["voicenter"])["voicenter"]["confirmed"] == "blocked:1"
    # The presumed-dead worker finishes afterwards: its answer must not be trusted.
    done = ctx.store.complete(
        chunk, {n: ItemResult("done", "", jitter=0.5)}, ctx.complete_options()
    )
    assert done.status == "orphan"
    work.schedule(ctx, done.staged)
    settle(ctx, dispatcher, clock)
    assert len(fake_voicenter.pushed()) == 3


def test_a_redelivered_push_of_a_completed_chunk_does_nothing(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(ctx, add(*numbers(2)))
    work.flush(ctx, "voicenter", Action.ADD, work.ALL)
    chunk_id = next(a[0] for k, a in dispatcher.tasks if k == "push")
    dispatcher.drain(ctx)
    assert pushing.push(ctx, chunk_id) == {}
    assert len(fake_voicenter.requests) == 1


def test_a_push_is_recorded_in_the_trail_and_a_failure_as_the_last_answer(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    n, bad = numbers(2)
    fake_voicenter.permanent.add(bad[1:])
    accept(ctx, add(n, bad))
    dispatcher.drain(ctx)
    newest, accepted = ctx.store.audit(n)
    assert accepted["act"] == "add" and accepted["res"] == "applied"
    assert {k: newest[k] for k in ("prov", "act", "out", "v", "n")} == {
        "prov": "voicenter", "act": "add", "out": "done", "v": 1, "n": 0,
    }  # fmt: skip
    # A success is in the trail only: nothing is kept beside the number for it.
    assert ctx.store.provider_view(n, ["voicenter"])["voicenter"]["last_answer"] is None
    failed = ctx.store.audit(bad)[0]
    last = ctx.store.provider_view(bad, ["voicenter"])["voicenter"]["last_answer"]
    assert last == {k: v for k, v in failed.items() if k not in ("prov", "id")}
    assert last["out"] == "dead"


def test_the_trail_keeps_every_entry_until_the_archive_has_it(
    make_ctx: Any, dispatcher: QueueDispatcher
) -> None:
    ctx = make_ctx(audit_cap=3)  # what the release before capped a number's tail at
    n = numbers(1)[0]
    for i in range(4):
        accept(ctx, Event("api", Action.ADD, [PhoneInput(n)], reason=f"r{i}"))
    assert [e.get("rsn") for e in ctx.store.audit(n)] == ["r3", "r2", "r1", "r0"]
    dispatcher.drain(ctx)
    trail = ctx.store.audit(n)
    assert len(trail) == 5
    assert trail[0]["out"] == "done"


def _claim_one(ctx: Context) -> str:
    claimed = ctx.store.claim(
        "voicenter", "voicenter", Action.ADD, size=100, lease_seconds=60, mode=work.FULL,
        linger_ms=0, max_chunks=1,
    )  # fmt: skip
    assert claimed.status == "ok" and len(claimed.chunks) == 1
    return claimed.chunks[0]


def test_a_push_goes_on_to_the_full_chunks_its_batch_still_holds(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(ctx, add(*numbers(450)))
    dispatcher.tasks.clear()  # no flush: the push alone drains the backlog
    ctx.monotonic = lambda: 0.0  # within its time however slow the machine is
    counts = pushing.push(ctx, _claim_one(ctx))
    assert [len(r) for r in fake_voicenter.pushed()] == [100, 100, 100, 100]
    assert {k: v for k, v in counts.items() if v} == {"done": 400}
    assert not [t for t in dispatcher.tasks if t[0] == "push"]
    # The last 50 are not a full chunk: they wait for their linger flush.
    assert len(fake_voicenter.blacklist) == 400
    assert work.flush(ctx, "voicenter", Action.ADD, work.ALL) == 1
    dispatcher.drain(ctx)
    assert len(fake_voicenter.blacklist) == 450


def test_after_its_time_a_push_hands_the_next_chunk_to_a_new_task(
    ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(pushing, "CHAIN_SECONDS", 0.0)
    accept(ctx, add(*numbers(300)))
    dispatcher.tasks.clear()
    pushing.push(ctx, _claim_one(ctx))
    assert [len(r) for r in fake_voicenter.pushed()] == [100]
    handed = [args for kind, args in dispatcher.tasks if kind == "push"]
    assert len(handed) == 1  # the next chunk, leased, in a task of its own
    assert ctx.store.open_chunk(handed[0][0], 60) is not None
    dispatcher.drain(ctx)
    assert len(fake_voicenter.blacklist) == 300


def test_a_push_does_not_go_on_while_the_provider_is_paused(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(ctx, add(*numbers(300)))
    dispatcher.tasks.clear()
    fake_voicenter.key = "another-code"  # Voicenter answers ErrorCode 1: paused
    assert pushing.push(ctx, _claim_one(ctx))["paused"] == 100
    assert len(fake_voicenter.bodies) == 1  # one request, no second chunk
    assert ctx.store.paused()


@pytest.mark.parametrize(
    ("status", "counts", "word"),
    [
        ("ok", {"done": 99, "stale": 1}, "delivered"),
        ("ok", {"retry": 100}, "retrying"),
        ("ok", {"outage": 60, "retry": 40}, "retrying"),
        ("ok", {"done": 50, "retry": 50}, "partly_delivered"),
        ("ok", {"done": 99, "dead": 1}, "dead_lettered"),
        ("ok", {"unsent": 100}, "not_sent"),
        ("orphan", {"orphan": 100}, "orphan"),
    ],
)
def test_a_chunks_log_line_says_what_became_of_it(
    status: str, counts: dict[str, int], word: str
) -> None:
    assert pushing.chunk_result(status, counts, 100) == word


def test_a_chunk_that_delivered_nothing_is_logged_as_a_warning(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    import structlog

    fake_voicenter.permanent.add("972500000001")
    with structlog.testing.capture_logs() as events:
        accept(ctx, add(*numbers(3)))
        dispatcher.drain(ctx)
    (line,) = [e for e in events if e["event"] == "chunk_pushed"]
    assert (line["result"], line["log_level"]) == ("dead_lettered", "warning")
    failed = [e for e in events if e["event"] == "number_failed"]
    assert [(e["outcome"], e["log_level"]) for e in failed] == [("permanent", "warning")]


def test_a_chain_that_fails_after_its_round_trip_leaves_the_next_chunk_to_nobody_leased(
    ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
    monkeypatch: Any,
) -> None:
    batch = numbers(200)
    accept(ctx, add(*batch))
    dispatcher.tasks.clear()
    ctx.monotonic = lambda: 0.0  # within the chain's time: the claim opens the next chunk
    first = _claim_one(ctx)
    clock.advance(1)
    accept(ctx, remove(clock, batch[0]))  # its completion stages the remove: a flush is due

    def broker_down(*args: Any) -> None:
        raise OSError("broker unreachable")

    monkeypatch.setattr(dispatcher, "flush", broker_down)
    with pytest.raises(OSError, match="broker"):
        pushing.push(ctx, first)
    assert [len(r) for r in fake_voicenter.pushed()] == [99]
    # The chunk the round trip claimed (and opened) for the chain is pushed by nobody: it is
    # given back, not left leased until its recovery.
    assert ctx.store.redis.zcard(ctx.store.key("leases")) == 0
    assert ctx.store.redis.zcard(ctx.store.key("stage", "voicenter", "add")) == 100
    assert ctx.store.redis.zcard(ctx.store.key("slots", "voicenter")) == 0  # nor its slot


class _Limits:
    """A provider's requests through shared slots (as `worker/runtime/wiring.py` builds
    its client, over `handle`), one at a time, a slot waited for half a second at most; and
    each slot given back in a round trip of its own, counted."""

    def __init__(
        self, store: Store, provider: str, handle: Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.given: list[str] = []
        self.asked: list[str] = []  # acquires, in round trips of their own
        acquire = store.acquire_slot
        store.acquire_slot = lambda p, t, **kw: self.asked.append(t) or acquire(p, t, **kw)  # type: ignore[method-assign]
        release = store.give_back_slots
        store.give_back_slots = lambda *a: self.given.append("back") or release(*a)  # type: ignore[method-assign]
        transport = SharedLimitTransport(httpx.MockTransport(handle), store, provider, rps=0,
                                         concurrency=1, lease_seconds=30,
                                         max_wait_seconds=0.5)  # fmt: skip
        self.client = LimitedClient(transport)


def _limited(
    env: dict[str, str] | None,
    provider: str,
    handle: Callable[[httpx.Request], httpx.Response],
    redis_fake: fakeredis.FakeRedis,
    dispatcher: QueueDispatcher,
    clock: FakeClock,
) -> tuple[Context, _Limits]:
    settings = make_settings(env)
    limits = _Limits(Store(redis_fake, prefix=settings.key_prefix, clock=clock), provider, handle)
    ctx = build_context(settings, client=redis_fake, http=limits.client, dispatcher=dispatcher,
                        clock=clock, rng=random.Random(7))  # fmt: skip
    return ctx, limits


@pytest.fixture
def limited_ctx(
    redis_fake: fakeredis.FakeRedis,
    fake_voicenter: FakeVoicenter,
    dispatcher: QueueDispatcher,
    clock: FakeClock,
) -> tuple[Context, _Limits]:
    """The pipeline with Voicenter's requests through shared slots."""
    handle = mock_transport(fake_voicenter.handle).handle_request
    return _limited(None, "voicenter", handle, redis_fake, dispatcher, clock)


def test_a_bulk_push_takes_its_slot_with_the_opening_and_gives_it_back_with_the_completion(
    limited_ctx: tuple[Context, _Limits],
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    monkeypatch: Any,
) -> None:
    # Three chunks, one chain, each request on the one slot: the push task's own opening
    # takes the first chunk's, the chain's claim (in the completion's round trip) the next
    # one's, and each completion gives it back; none in a round trip of its own.
    monkeypatch.setattr(lease, "FIRST_SLOT_SECONDS", 60.0)  # however slow this machine is
    ctx, limits = limited_ctx
    accept(ctx, add(*numbers(300)))
    dispatcher.drain(ctx)
    assert sorted(len(r) for r in fake_voicenter.pushed()) == [100, 100, 100]
    assert (limits.asked, limits.given) == ([], [])
    assert ctx.store.redis.zcard(ctx.store.key("slots", "voicenter")) == 0


def test_a_push_that_sends_nothing_gives_back_the_slot_its_opening_took(
    limited_ctx: tuple[Context, _Limits],
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
) -> None:
    ctx, _ = limited_ctx
    accept(ctx, add(*numbers(100)))
    dispatcher.tasks.clear()
    [chunk_id] = ctx.claim("voicenter", "voicenter", Action.ADD, work.ALL, 1).chunks
    clock.advance(1)
    accept(ctx, remove(clock, *numbers(100)))  # every number stale before the push opens
    pushing.push(ctx, chunk_id)
    assert fake_voicenter.pushed() == []
    assert ctx.store.redis.zcard(ctx.store.key("slots", "voicenter")) == 0


def test_a_push_whose_completion_failed_gives_its_slots_back_all_the_same(
    limited_ctx: tuple[Context, _Limits], dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    ctx, _ = limited_ctx
    accept(ctx, add(*numbers(100)))
    dispatcher.tasks.clear()
    [chunk_id] = ctx.claim("voicenter", "voicenter", Action.ADD, work.ALL, 1).chunks

    def down(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis went away")

    ctx.store.complete_then_claim = down  # type: ignore[method-assign]
    with pytest.raises(redis.ConnectionError):
        pushing.push(ctx, chunk_id)
    assert len(fake_voicenter.pushed()) == 1
    # Not left held until its lease runs out: the next push's request is not kept waiting.
    assert ctx.store.redis.zcard(ctx.store.key("slots", "voicenter")) == 0


def test_a_per_number_providers_requests_give_their_slots_back_at_once(
    redis_fake: fakeredis.FakeRedis, dispatcher: QueueDispatcher, clock: FakeClock
) -> None:
    # Given back in the next request's round trip, a slot would pass straight to the same
    # push, and other workers waiting on a small cap would get no turn within a chunk.
    fake = make_fake("voodoosms")
    sent: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return mock_transport(fake.handle).handle_request(request)

    env = env_for("voodoosms", "http://voodoosms.test")
    ctx, limits = _limited(env, "voodoosms", handle, redis_fake, dispatcher, clock)
    accept(ctx, add(*numbers(3)))
    dispatcher.drain(ctx)
    assert listed(fake, "voodoosms") == {n[1:] for n in numbers(3)}
    assert len(sent) >= 3
    assert len(limits.given) == len(sent)  # each its own, as soon as its answer was read
