"""The batch pipeline end to end in-process: fakeredis, the fake Voicenter, a queue dispatcher."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import ADD, REMOVE, FakeVoicenter
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.batching import Pipeline
from worker.providers.base import Action


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+97250{i:07d}" for i in range(start, start + count)]


def add(*phones: str) -> Event:
    return Event("api", Action.ADD, [PhoneInput(p) for p in phones])


def remove(clock: FakeClock, *phones: str) -> Event:
    when = datetime.fromtimestamp(clock.now, tz=UTC)
    return Event("api", Action.REMOVE, [PhoneInput(p) for p in phones], occurred_at=when)


def settle(pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock, rounds: int = 12) -> None:
    """Run queued work, then let time pass so retries come due, until nothing is left (past
    the late window too: a push that a lost chunk's late request may have overtaken is
    confirmed by one more)."""
    for i in range(rounds + 2):
        dispatcher.drain(pipe)
        wait = pipe.late_ms / 1000 if i == rounds else pipe.settings.retry_max_seconds
        clock.advance(wait + 1)
        work.sweep(pipe)
        dispatcher.drain(pipe)


def test_250_numbers_cost_exactly_three_requests(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(pipe, add(*numbers(250)))
    dispatcher.drain(pipe)
    sizes = [len(r) for r in fake_voicenter.pushed()]
    assert sizes == [100, 100, 50]
    assert fake_voicenter.pushed()[0][0] == "972500000000"
    assert len(fake_voicenter.blacklist) == 250


def test_numbers_from_many_events_share_a_batch(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    for n in numbers(150):
        accept(pipe, add(n))
    dispatcher.drain(pipe)
    assert [len(r) for r in fake_voicenter.pushed()] == [100, 50]


def test_a_linger_flush_with_nothing_staged_sends_nothing(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    assert work.flush(pipe, "voicenter", Action.ADD, work.ALL) == 0
    assert fake_voicenter.requests == []


def test_code_2_retries_that_number_alone_then_succeeds(
    pipe: Pipeline,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
) -> None:
    batch = numbers(5)
    flaky = "972500000002"
    fake_voicenter.flaky[flaky] = 2
    accept(pipe, add(*batch))
    settle(pipe, dispatcher, clock)
    pushed = fake_voicenter.pushed()
    assert len(pushed[0]) == 5
    assert pushed[1:] == [[flaky], [flaky]]
    assert flaky in fake_voicenter.blacklist
    view = pipe.store.provider_view("+" + flaky, ["voicenter"])["voicenter"]
    assert view["confirmed"] == "blocked:1"
    assert view["attempts"] == 0


def test_code_1_dead_letters_with_reason_and_replay_delivers(
    pipe: Pipeline,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
) -> None:
    bad = "972500000001"
    fake_voicenter.permanent.add(bad)
    accept(pipe, add(*numbers(3)))
    settle(pipe, dispatcher, clock)
    dead = pipe.store.dead_letters()
    assert [d["phone"] for d in dead] == ["+" + bad]
    assert dead[0]["reason"] == "bad_format"
    assert dead[0]["action"] == "add"
    assert dead[0]["attempts"] == 1
    assert dead[0]["events"]
    assert len(fake_voicenter.pushed()) == 1  # permanent: never retried on its own

    fake_voicenter.permanent.clear()
    assert work.replay(pipe, [d["id"] for d in dead], "test") == 1
    assert work.replay(pipe, [d["id"] for d in dead], "test") == 1  # twice: staged once
    settle(pipe, dispatcher, clock)
    assert pipe.store.dead_letters() == []
    assert fake_voicenter.pushed()[1:] == [[bad]]
    audit = pipe.store.audit("+" + bad)
    assert any(e.get("act") == "replay" and e.get("by") == "test" for e in audit)


def test_retries_are_capped_then_dead_lettered(
    make_pipe: Any, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    pipe = make_pipe(max_attempts=3)
    fake_voicenter.flaky["972500000000"] = 100
    accept(pipe, add(*numbers(1)))
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.pushed()) == 3
    dead = pipe.store.dead_letters()
    assert dead[0]["reason"] == "max_attempts"
    assert "provider_internal_error" in dead[0]["last_error"]


def test_backoff_grows_and_waits(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.flaky["972500000000"] = 100
    accept(pipe, add(*numbers(1)))
    dispatcher.drain(pipe)
    first = pipe.store.provider_view("+972500000000", ["voicenter"])["voicenter"]["retry_at_ms"]
    base_ms = pipe.settings.retry_base_seconds * 1000
    assert 0.5 * base_ms <= first - pipe.store.now_ms() <= base_ms
    work.sweep(pipe)  # not due yet: nothing moves
    dispatcher.drain(pipe)
    assert len(fake_voicenter.pushed()) == 1
    clock.advance(pipe.settings.retry_base_seconds)
    work.sweep(pipe)
    dispatcher.drain(pipe)
    assert len(fake_voicenter.pushed()) == 2
    second = pipe.store.provider_view("+972500000000", ["voicenter"])["voicenter"]["retry_at_ms"]
    assert second - pipe.store.now_ms() >= base_ms  # 2 * base * [0.5, 1]


def test_a_whole_chunk_rejection_is_split_to_isolate_the_bad_number(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock
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

    pipe.providers["voicenter"] = VoicenterProvider(
        "good-code", "http://v.test", httpx.Client(transport=mock_transport(handler))
    )
    accept(pipe, add(*numbers(100)))
    settle(pipe, dispatcher, clock)
    assert len(fake.blacklist) == 99
    dead = pipe.store.dead_letters()
    assert [d["phone"] for d in dead] == ["+" + poison]
    assert dead[0]["reason"] == "phones_rejected"


def test_auth_failure_pauses_keeps_numbers_staged_and_resume_delivers(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.key = "rotated"
    accept(pipe, add(*numbers(10)))
    settle(pipe, dispatcher, clock)
    assert "voicenter" in pipe.store.paused()
    assert pipe.store.dead_letters() == []
    assert pipe.store.counts(["voicenter"])["voicenter"]["staged_add"] == 10
    assert fake_voicenter.blacklist == set()
    # While paused, flushes claim nothing.
    accept(pipe, add(*numbers(5, start=10)))
    settle(pipe, dispatcher, clock)
    assert pipe.store.counts(["voicenter"])["voicenter"]["staged_add"] == 15

    fake_voicenter.key = "good-code"
    assert pipe.store.resume("voicenter")
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 15
    assert pipe.store.counts(["voicenter"])["voicenter"]["staged_add"] == 0


def test_429_holds_the_provider_until_retry_after(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.http_status = 429
    fake_voicenter.http_status_times = 1
    fake_voicenter.retry_after = "30"
    accept(pipe, add(*numbers(3)))
    dispatcher.drain(pipe)
    assert pipe.store.held_for("voicenter") > 29
    retry_at = pipe.store.provider_view("+972500000000", ["voicenter"])["voicenter"]["retry_at_ms"]
    assert retry_at >= pipe.store.now_ms() + 30_000
    # A new number staged meanwhile is not pushed while the hold lasts.
    accept(pipe, add(*numbers(1, start=50)))
    dispatcher.drain(pipe)
    assert fake_voicenter.requests == []


def test_5xx_retries_the_whole_chunk(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    fake_voicenter.http_status = 500
    fake_voicenter.http_status_times = 2
    accept(pipe, add(*numbers(4)))
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 4
    assert pipe.store.dead_letters() == []


def test_ledger_moving_while_in_flight_restages_the_newest_state(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n = numbers(1)[0]
    accept(pipe, add(n))
    # Claim the add, then a remove lands while the chunk is in flight.
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)
    chunk_id = next(a[0] for k, a in dispatcher.tasks if k == "push")
    clock.advance(1)
    accept(pipe, remove(clock, n))
    assert pipe.store.provider_view(n, ["voicenter"])["voicenter"]["staged"] is None
    # The push re-reads the ledger: the add is stale and is not sent.
    work.push(pipe, chunk_id)
    assert fake_voicenter.requests == []
    settle(pipe, dispatcher, clock)
    assert [p for _, p, _ in fake_voicenter.requests] == [REMOVE]
    assert pipe.store.provider_view(n, ["voicenter"])["voicenter"]["confirmed"] == "unblocked:2"


def test_a_change_after_the_request_went_out_is_pushed_after_it(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n = numbers(1)[0]
    accept(pipe, add(n))
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)

    def remove_lands_mid_request() -> None:
        clock.advance(1)
        accept(pipe, remove(clock, n))

    fake_voicenter.after_request = remove_lands_mid_request
    settle(pipe, dispatcher, clock)
    assert [p for _, p, _ in fake_voicenter.requests] == [ADD, REMOVE]
    assert fake_voicenter.blacklist == set()


def test_an_expired_lease_is_recovered_and_delivered(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    accept(pipe, add(*numbers(3)))
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)
    dispatcher.tasks.clear()  # the worker holding the push died
    clock.advance(pipe.settings.lease_seconds + 1)
    assert work.recover(pipe) == 1
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 3
    assert pipe.store.counts(["voicenter"])["voicenter"]["in_flight"] == 0


def test_a_late_push_after_recovery_forces_a_fresh_push(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    n = numbers(1)[0]
    accept(pipe, add(n))
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)
    chunk_id = next(a[0] for k, a in dispatcher.tasks if k == "push")
    dispatcher.tasks.clear()
    opened = pipe.store.open_chunk(chunk_id, pipe.settings.lease_seconds)
    assert opened is not None
    chunk = opened.chunk
    clock.advance(pipe.settings.lease_seconds + 1)
    work.recover(pipe)
    settle(pipe, dispatcher, clock)
    # The push that replaced it, and once the recovered chunk's requests can no longer
    # land, one more to confirm it.
    assert len(fake_voicenter.pushed()) == 2
    assert pipe.store.provider_view(n, ["voicenter"])["voicenter"]["confirmed"] == "blocked:1"
    # The presumed-dead worker finishes afterwards: its answer must not be trusted.
    done = pipe.store.complete(chunk, {n: ("done", "", "", 0, 0.5, 0, 0)}, pipe.complete_options())
    assert done.status == "orphan"
    work.schedule(pipe, done.staged)
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.pushed()) == 3


def test_a_redelivered_push_of_a_completed_chunk_does_nothing(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(pipe, add(*numbers(2)))
    work.flush(pipe, "voicenter", Action.ADD, work.ALL)
    chunk_id = next(a[0] for k, a in dispatcher.tasks if k == "push")
    dispatcher.drain(pipe)
    assert work.push(pipe, chunk_id) == {}
    assert len(fake_voicenter.requests) == 1


def test_interleaved_adds_and_removes_end_equal_to_the_ledger(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    import random

    rng = random.Random(3)
    batch = numbers(60)
    for _ in range(400):
        n = rng.choice(batch)
        clock.advance(0.01)
        if rng.random() < 0.5:
            accept(pipe, add(n))
        else:
            accept(pipe, remove(clock, n))
        if rng.random() < 0.3:
            # Run a random amount of the queued work, out of order.
            for _ in range(rng.randint(0, 3)):
                if dispatcher.tasks:
                    i = rng.randrange(len(dispatcher.tasks))
                    kind, args = dispatcher.tasks[i]
                    del dispatcher.tasks[i]
                    if kind == "flush":
                        work.flush(pipe, args[0], args[1], args[2])
                    else:
                        work.push(pipe, args[0])
    settle(pipe, dispatcher, clock)
    for n in batch:
        state = pipe.store.ledger(n).get("s")
        if state is None:
            continue
        assert (n[1:] in fake_voicenter.blacklist) == (state == "blocked"), n


def test_one_full_flush_per_completed_chunk_not_per_event(
    pipe: Pipeline, dispatcher: QueueDispatcher
) -> None:
    for n in numbers(250):
        accept(pipe, add(n))  # no worker drains the batch meanwhile
    modes = [args[2] for kind, args in dispatcher.sent if kind == "flush"]
    assert modes.count(work.FULL) == 2
    assert modes.count(work.ALL) == 1  # the linger flush of the batch the first event opened


def test_a_push_is_recorded_in_the_trail_and_as_the_last_answer(
    pipe: Pipeline, dispatcher: QueueDispatcher
) -> None:
    n = numbers(1)[0]
    accept(pipe, add(n))
    dispatcher.drain(pipe)
    newest, accepted = pipe.store.audit(n)
    assert accepted["act"] == "add" and accepted["res"] == "applied"
    assert {k: newest[k] for k in ("prov", "act", "out", "v", "n")} == {
        "prov": "voicenter", "act": "add", "out": "done", "v": 1, "n": 0,
    }  # fmt: skip
    last = pipe.store.provider_view(n, ["voicenter"])["voicenter"]["last_answer"]
    assert last == {k: v for k, v in newest.items() if k != "prov"}


def test_the_trail_keeps_the_newest_entries_up_to_the_cap(
    make_pipe: Any, dispatcher: QueueDispatcher
) -> None:
    pipe = make_pipe(audit_cap=3)
    n = numbers(1)[0]
    for i in range(4):
        accept(pipe, Event("api", Action.ADD, [PhoneInput(n)], reason=f"r{i}"))
    assert [e.get("rsn") for e in pipe.store.audit(n)] == ["r3", "r2", "r1"]
    dispatcher.drain(pipe)
    trail = pipe.store.audit(n)
    assert len(trail) == 3
    assert trail[0]["out"] == "done"


def _claim_one(pipe: Pipeline) -> str:
    status, ids, _ = pipe.store.claim(
        "voicenter", "voicenter", Action.ADD, size=100, lease_seconds=60, mode=work.FULL,
        linger_ms=0, max_chunks=1,
    )  # fmt: skip
    assert status == "ok" and len(ids) == 1
    return ids[0]


def test_a_push_goes_on_to_the_full_chunks_its_batch_still_holds(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(pipe, add(*numbers(450)))
    dispatcher.tasks.clear()  # no flush: the push alone drains the backlog
    pipe.monotonic = lambda: 0.0  # within its time however slow the machine is
    counts = work.push(pipe, _claim_one(pipe))
    assert [len(r) for r in fake_voicenter.pushed()] == [100, 100, 100, 100]
    assert {k: v for k, v in counts.items() if v} == {"done": 400}
    assert not [t for t in dispatcher.tasks if t[0] == "push"]
    # The last 50 are not a full chunk: they wait for their linger flush.
    assert len(fake_voicenter.blacklist) == 400
    assert work.flush(pipe, "voicenter", Action.ADD, work.ALL) == 1
    dispatcher.drain(pipe)
    assert len(fake_voicenter.blacklist) == 450


def test_after_its_time_a_push_hands_the_next_chunk_to_a_new_task(
    pipe: Pipeline,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(work, "CHAIN_SECONDS", 0.0)
    accept(pipe, add(*numbers(300)))
    dispatcher.tasks.clear()
    work.push(pipe, _claim_one(pipe))
    assert [len(r) for r in fake_voicenter.pushed()] == [100]
    handed = [args for kind, args in dispatcher.tasks if kind == "push"]
    assert len(handed) == 1  # the next chunk, leased, in a task of its own
    assert pipe.store.open_chunk(handed[0][0], 60) is not None
    dispatcher.drain(pipe)
    assert len(fake_voicenter.blacklist) == 300


def test_claims_stop_at_the_targets_in_flight_cap(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    cap = pipe.max_in_flight("voicenter")
    accept(pipe, add(*numbers(100 * (cap + 3))))
    dispatcher.tasks.clear()
    assert work.flush(pipe, "voicenter", Action.ADD, work.ALL) == cap
    assert work.flush(pipe, "voicenter", Action.ADD, work.ALL) == 0  # still at the cap
    # The pushes in flight drain the rest themselves, without another flush.
    dispatcher.drain(pipe)
    assert len(fake_voicenter.blacklist) == 100 * (cap + 3)
    assert [len(r) for r in fake_voicenter.pushed()] == [100] * (cap + 3)


def test_a_push_does_not_go_on_while_the_provider_is_paused(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    accept(pipe, add(*numbers(300)))
    dispatcher.tasks.clear()
    fake_voicenter.key = "another-code"  # Voicenter answers ErrorCode 1: paused
    assert work.push(pipe, _claim_one(pipe))["paused"] == 100
    assert len(fake_voicenter.bodies) == 1  # one request, no second chunk
    assert pipe.store.paused()


def test_no_full_flush_while_the_target_is_at_its_in_flight_cap(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    cap = pipe.max_in_flight("voicenter")
    accept(pipe, add(*numbers(100 * cap)))
    assert work.flush(pipe, "voicenter", Action.ADD, work.ALL) == cap  # now at the cap
    mark = len(dispatcher.sent)
    accept(pipe, add(*numbers(250, start=100 * cap)))  # fills two more chunks
    assert [a for kind, a in dispatcher.sent[mark:] if kind == "flush" and a[2] == work.FULL] == []
    # The pushes in flight take the filled chunks when they are done; the sweep the rest.
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 100 * cap + 250


def test_the_in_flight_cap_is_the_providers_concurrency_or_two_per_worker_process() -> None:
    import fakeredis

    from tests.conftest import make_settings
    from worker.runtime.wiring import build_pipeline

    env = {"VOICENTER_API_CODE": "good-code", "VOICENTER_BASE_URL": "http://voicenter.test"}
    capped = make_settings({**env, "OPTOUT_PROVIDER_LIMITS": "voicenter=10/3"})
    uncapped = make_settings(
        {**env, "OPTOUT_PROVIDER_LIMITS": "voicenter=0/0", "OPTOUT_WORKER_CONCURRENCY": "5"}
    )
    for settings, cap in ((capped, 3), (uncapped, 10)):
        pipe = build_pipeline(settings, client=fakeredis.FakeRedis(), dispatcher=QueueDispatcher())
        assert pipe.max_in_flight("voicenter") == cap


def test_scheduled_runs_queued_back_to_back_collapse_into_one_by_the_servers_clock(
    pipe: Pipeline,
) -> None:
    # Found by the sixteenth review: beat's sweeps carried a Celery expiry, which each
    # worker judged by its host's clock: a worker host 30 s ahead of beat's dropped every
    # sweep (no retries, catch-ups, expiries or linger flushes, and nothing said so). Now
    # runs that beat queued while no worker took them give way to one that ran within half
    # an interval, timed by the server.
    ran: list[int] = []

    def run(p: Pipeline) -> int:
        ran.append(1)
        return 1

    assert [work.on_schedule(pipe, "sweep", 10, run) for _ in range(5)] == [1, 0, 0, 0, 0]
    assert 0 < pipe.store.redis.pttl(pipe.store.key("turn", "sweep")) <= 5000
    assert work.on_schedule(pipe, "recover", 10, run) == 1  # each task its own turn
    assert work.on_schedule(pipe, "flush", 0.02, run) == 1
    time.sleep(0.05)
    assert work.on_schedule(pipe, "flush", 0.02, run) == 1  # half an interval on
    assert len(ran) == 4

    def fail(p: Pipeline) -> int:
        raise redis.ConnectionError("a hiccup")

    with pytest.raises(redis.ConnectionError):
        work.on_schedule(pipe, "reconcile", 10, fail)
    assert work.on_schedule(pipe, "reconcile", 10, run) == 1  # Celery's retry is not skipped

    # A run that outlived its turn gives back none that another run took since.
    def slow_then_fail(p: Pipeline) -> int:
        p.store.redis.delete(p.store.key("turn", "slow"))  # its turn ran out
        assert work.on_schedule(p, "slow", 10, run) == 1  # another run took one
        raise redis.ConnectionError("a hiccup")

    with pytest.raises(redis.ConnectionError):
        work.on_schedule(pipe, "slow", 10, slow_then_fail)
    assert work.on_schedule(pipe, "slow", 10, run) == 0
