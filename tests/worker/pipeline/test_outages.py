"""An outage is not a number failure: whole-request failures hold the provider (a circuit
breaker probing with backoff) without spending per-number attempts; a push interrupted by
refused credentials keeps what already succeeded."""

from __future__ import annotations

import random
from typing import Any

import fakeredis
import pytest

from tests.conftest import FakeClock, make_settings
from tests.fakes.base import Answer, FakeProvider
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import CALL, Router, env_for, listed, make_fake, targets_of
from tests.fakes.voicenter import FakeVoicenter
from tests.worker.pipeline.test_batching import add, numbers, settle
from tests.worker.providers.test_all_providers import World
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.batching import Pipeline
from worker.providers.base import Action
from worker.runtime.wiring import build_pipeline


def _down(fake: FakeProvider, clock: FakeClock, until: float) -> list[float]:
    """The fake answers 503 until the clock reaches `until`; returns the request times."""
    hits: list[float] = []

    def outage() -> Answer | None:
        if clock.now < until:
            hits.append(clock.now)
            return 503, {"error": "down for maintenance"}, {}
        return None

    fake.chaos = outage
    return hits


def _run_for(
    pipe: Pipeline, dispatcher: QueueDispatcher, clock: FakeClock, seconds: float, step: float
) -> None:
    """Beat and workers for `seconds` of fake time: a sweep and a drain every `step`."""
    end = clock.now + seconds
    while clock.now < end:
        clock.advance(step)
        work.sweep(pipe)
        dispatcher.drain(pipe)


def test_a_thirty_minute_outage_dead_letters_nothing_and_the_backlog_drains(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    # The defaults: 8 attempts, 2 s base. Before, every number pushed during a 3-4 minute
    # outage was dead-lettered.
    hits = _down(fake_voicenter, clock, clock.now + 1800)
    accept(pipe, add(*numbers(500)))
    _run_for(pipe, dispatcher, clock, 1790, step=5)
    assert pipe.store.dead_letters() == []
    assert pipe.store.circuit("voicenter") is not None
    view = pipe.store.provider_view(numbers(1)[0], ["voicenter"])["voicenter"]
    assert view["attempts"] == 0
    # Held, then probed with one chunk at a time: a few requests a minute, not one per
    # number per backoff step.
    assert len(hits) < 80, len(hits)
    _run_for(pipe, dispatcher, clock, 120, step=5)
    assert len(fake_voicenter.blacklist) == 500
    assert pipe.store.circuit("voicenter") is None
    assert pipe.store.counts(["voicenter"])["voicenter"] == {
        "staged_add": 0, "staged_remove": 0, "in_flight": 0,
    }  # fmt: skip


def test_the_circuit_opens_after_three_failed_chunks_and_one_chunk_probes(
    pipe: Pipeline, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    _down(fake_voicenter, clock, clock.now + 10)
    accept(pipe, add(*numbers(600)))
    dispatcher.drain(pipe)
    circuit = pipe.store.circuit("voicenter")
    assert circuit is not None and circuit["opens"] == 1
    assert "503" in circuit["reason"]
    assert pipe.store.held_for("voicenter") > 0
    # While it holds, nothing is claimed.
    assert work.flush(pipe, "voicenter", add(numbers(1)[0]).action, work.ALL) == 0
    clock.advance(11)
    work.sweep(pipe)  # the retries are due: staged again
    dispatcher.tasks.clear()
    # Half open: one chunk probes; the rest waits until it answers.
    assert work.flush(pipe, "voicenter", add(numbers(1)[0]).action, work.ALL) == 1
    assert work.flush(pipe, "voicenter", add(numbers(1)[0]).action, work.ALL) == 0
    settle(pipe, dispatcher, clock)
    assert len(fake_voicenter.blacklist) == 600
    assert pipe.store.circuit("voicenter") is None


def test_a_number_failing_only_by_outages_is_dead_lettered_after_the_budget(
    make_pipe: Any, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    pipe = make_pipe(outage_budget_hours=1)
    _down(fake_voicenter, clock, clock.now + 10 * 3600)
    accept(pipe, add(*numbers(3)))
    _run_for(pipe, dispatcher, clock, 3700, step=30)
    dead = pipe.store.dead_letters()
    assert sorted(d["phone"] for d in dead) == numbers(3)
    assert {d["reason"] for d in dead} == {"outage_budget"}


def test_a_shorter_retry_after_never_cuts_a_longer_hold_short(pipe: Pipeline) -> None:
    pipe.store.hold("voicenter", 30)
    pipe.store.hold("voicenter", 5)
    assert pipe.store.held_for("voicenter") > 29


def test_credentials_refused_mid_chunk_keep_the_numbers_that_succeeded(clock: FakeClock) -> None:
    # Issue 13, item 12: after resume only the numbers not yet added are pushed again.
    fake = make_fake("voodoosms")
    dispatcher = QueueDispatcher()
    pipe = build_pipeline(
        make_settings(env_for("voodoosms", "http://voodoosms.test")),
        client=fakeredis.FakeRedis(),
        http=Router({"voodoosms": fake}).client(),
        dispatcher=dispatcher,
        clock=clock,
        rng=random.Random(1),
    )
    original = fake.handle

    def handle(*args: Any) -> Any:
        answer = original(*args)
        if len(fake.requests) == 4:
            fake.key = "revoked"  # the account's key is rotated after four adds
        return answer

    fake.handle = handle  # type: ignore[method-assign]
    phones = numbers(12)
    accept(pipe, add(*phones))
    dispatcher.drain(pipe)
    assert "voodoosms" in pipe.store.paused()
    added = set(fake.listed())
    assert len(added) >= 4
    for n in phones:
        confirmed = pipe.store.provider_view(n, ["voodoosms"])["voodoosms"]["confirmed"]
        assert (confirmed == "blocked:1") == (n[1:] in added), n
    assert pipe.store.dead_letters() == []

    fake.key = "good-key"
    assert pipe.store.resume("voodoosms")
    work.flush(pipe, "voodoosms", add(phones[0]).action, work.ALL)
    settle(pipe, dispatcher, clock)
    assert fake.listed() == {n[1:] for n in phones}
    sent = fake.numbers_sent()
    assert sorted(sent) == sorted(set(sent)), "a number that succeeded was pushed again"


def test_an_open_circuit_shows_in_readyz_metrics_and_provider_list(
    pipe: Pipeline,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from worker.cli.common import console
    from worker.cli.main import app
    from worker.ingress.api import create_api, state_gauges
    from worker.runtime import wiring

    assert state_gauges(pipe)["open_circuits"] == 0.0
    _down(fake_voicenter, clock, clock.now + 60)
    accept(pipe, add(*numbers(300)))
    dispatcher.drain(pipe)
    ready = TestClient(create_api(lambda: pipe)).get("/readyz").json()
    assert set(ready["open_circuits"]) == {"voicenter"}
    assert ready["open_circuits"]["voicenter"]["opens"] >= 1
    assert state_gauges(pipe)["open_circuits"] == 1.0
    monkeypatch.setattr(wiring, "_pipeline", pipe)
    monkeypatch.setattr(console, "width", 200)  # one line a row
    listed = CliRunner().invoke(app, ["provider", "list"])
    assert "circuit open, next probe in" in listed.output


@pytest.mark.parametrize("name", ["voicenter", "voodoosms"])
def test_a_redis_error_mid_push_fails_the_task_and_spends_no_attempt(
    name: str, clock: FakeClock
) -> None:
    # Review of the catch-all for unexpected provider errors: a Redis error while renewing
    # the lease (or taking a rate-limit slot) is not the numbers' failure. The push stops
    # and its task fails (Celery retries it; lease recovery is the net), as before.
    import redis

    router = Router({name: make_fake(name)})
    dispatcher = QueueDispatcher()
    pipe = build_pipeline(
        make_settings(env_for(name, f"http://{name}.test")), client=fakeredis.FakeRedis(),
        http=router.client(), dispatcher=dispatcher, clock=clock, rng=random.Random(1),
    )  # fmt: skip
    renew = pipe.store.renew
    blips = {"left": 1}

    def flaky_renew(*args: Any, **kwargs: Any) -> bool:
        if blips["left"]:
            blips["left"] -= 1
            raise redis.ConnectionError("Redis went away")
        return renew(*args, **kwargs)

    pipe.store.renew = flaky_renew  # type: ignore[method-assign]
    phones = numbers(3)
    accept(pipe, add(*phones))
    with pytest.raises(redis.ConnectionError):
        dispatcher.drain(pipe)
    assert not pipe.store.redis.hlen(pipe.store.key("fails", name))
    for _ in range(20):  # the task's retry is lost here: lease recovery takes it back
        clock.advance(10)
        work.sweep(pipe)
        work.recover(pipe)
        dispatcher.drain(pipe)
    assert router.fakes[name].listed() == {n[1:] for n in phones}
    assert pipe.store.dead_letters() == []


# What a proxy or captive portal in the way answers: a body that does not match its
# Content-Encoding, or a plain HTML page with 200.
PAGES = {
    "undecodable": ({"Content-Encoding": "gzip"}, b"<html>"),
    "html": ({"Content-Type": "text/html"}, b"<html><body>Upstream maintenance</body></html>"),
}


def _proxy_in_the_way(
    name: str, clock: FakeClock, poison: str | None = None, page: str = "undecodable"
) -> tuple[Pipeline, QueueDispatcher, FakeProvider, dict[str, int]]:
    """A pipeline at the production retry settings behind a proxy that answers 200 with a
    page (PAGES): to every request while `down` is set, and always to the requests that
    carry `poison`."""
    import httpx

    from tests.fakes.server import mock_transport

    fake = make_fake(name)
    inner = mock_transport(fake.handle)
    seen = {"down": 1, "poison": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        hit = poison is not None and poison.encode() in request.content
        seen["poison"] += hit
        if seen["down"] or hit:
            headers, content = PAGES[page]
            return httpx.Response(200, headers=headers, content=content)
        return inner.handle_request(request)

    dispatcher = QueueDispatcher()
    pipe = build_pipeline(
        make_settings(env_for(name, f"http://{name}.test")), client=fakeredis.FakeRedis(),
        http=httpx.Client(transport=httpx.MockTransport(handler)), dispatcher=dispatcher,
        clock=clock, rng=random.Random(3),
    )  # fmt: skip
    return pipe, dispatcher, fake, seen


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("name", ["voicenter", "phonely", "voodoosms", "weya", "daktela"])
def test_a_proxy_page_for_minutes_is_an_outage_and_dead_letters_nothing(
    name: str, page: str, clock: FakeClock
) -> None:
    # Found by the second review (an undecodable body) and the third (a readable HTML page):
    # each was a retry of each number, so a proxy in the way for about three minutes
    # dead-lettered every number pushed meanwhile (a 502 from the same proxy dead-letters
    # nothing), and the circuit never opened.
    pipe, dispatcher, fake, seen = _proxy_in_the_way(name, clock, page=page)
    phones = numbers(5)
    accept(pipe, Event("api", Action.ADD, [PhoneInput(n) for n in phones], context=CALL))
    _run_for(pipe, dispatcher, clock, 360, step=5)
    assert pipe.store.dead_letters() == []
    assert pipe.store.open_circuits([name])
    seen["down"] = 0
    _run_for(pipe, dispatcher, clock, 180, step=5)
    for target in targets_of(name):
        assert listed(fake, target) == {n[1:] for n in phones}


def test_one_number_whose_request_keeps_failing_whole_is_tried_less_and_less_often(
    clock: FakeClock,
) -> None:
    # Its request fails as a whole (an outage: no attempt spent) while the provider answers
    # the others, so the circuit stays closed: the wait grows with how long it has failed
    # (up to a minute), not a request every two seconds for a day.
    phones = numbers(4)
    pipe, dispatcher, fake, seen = _proxy_in_the_way("voodoosms", clock, poison=phones[0][1:])
    seen["down"] = 0
    accept(pipe, add(*phones))
    _run_for(pipe, dispatcher, clock, 3600, step=5)
    assert fake.listed() == {n[1:] for n in phones[1:]}
    assert pipe.store.dead_letters() == []  # within the outage budget (24 h)
    assert 20 <= seen["poison"] <= 120, seen  # every 2-4 s it would be ~1,200


def test_a_blip_after_days_paused_is_not_a_day_long_outage(clock: FakeClock) -> None:
    # Found by the third review: the first failure's time was kept until a success or a
    # dead letter, so after one outage, two days paused on refused credentials and a resume,
    # the next 503 counted from before the pause: dead-lettered for the outage budget.
    w = World("voicenter")
    n = numbers(1)[0]
    w.fake.http_status, w.fake.http_status_times = 503, 1
    accept(w.pipe, add(n))
    w.dispatcher.drain(w.pipe)
    w.fake.http_status, w.fake.http_status_times = 401, 1
    _run_for(w.pipe, w.dispatcher, w.clock, 30, step=5)
    assert "voicenter" in w.pipe.store.paused()
    w.clock.advance(2 * 86400)
    assert w.pipe.store.resume("voicenter")
    w.fake.http_status, w.fake.http_status_times = 503, 1
    work.flush(w.pipe, "voicenter", Action.ADD, work.ALL)
    w.dispatcher.drain(w.pipe)
    assert w.pipe.store.dead_letters() == []
    w.settle()
    assert w.fake.listed() == {n[1:]}


def test_a_remove_does_not_inherit_the_failed_attempts_of_the_add_it_supersedes() -> None:
    # Found by the third review: attempts were counted per number, not per action, so a
    # remove arriving after its add had failed seven times was dead-lettered on its own
    # first failure, and Voicenter kept a block the ledger had lifted.
    w = World("voicenter")
    n = numbers(1)[0]
    w.fake.flaky[n[1:]] = 7
    w.add(n)
    w.dispatcher.drain(w.pipe)
    for _ in range(6):
        w.clock.advance(w.pipe.settings.retry_max_seconds + 1)
        work.sweep(w.pipe)
        w.dispatcher.drain(w.pipe)
    assert w.pipe.store.provider_view(n, ["voicenter"])["voicenter"]["attempts"] == 7
    w.fake.flaky[n[1:]] = 1  # the remove fails once, then succeeds
    w.remove(n)
    w.settle()
    assert w.pipe.store.dead_letters() == []
    assert w.fake.listed() == set()
    assert w.pipe.store.provider_view(n, ["voicenter"])["voicenter"]["attempts"] == 0
