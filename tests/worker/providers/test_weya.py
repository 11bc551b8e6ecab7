"""Weya specifics: call-linked only, add only, 404 retried for a while, never twice."""

from __future__ import annotations

from tests.fakes.providers import CALL
from tests.fakes.weya import FakeWeya
from tests.worker.providers.test_all_providers import World, numbers
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.providers.base import Action


def test_an_event_without_a_call_record_is_not_applicable_not_a_failure() -> None:
    w = World("weya")
    accept(w.ctx, Event("api", Action.ADD, [PhoneInput(numbers(1)[0])]))
    w.settle()
    assert w.fake.requests == []
    assert w.ctx.store.dead_letters() == []
    assert w.ctx.store.audit(numbers(1)[0])[0]["na"] == ["weya"]


def test_the_call_context_is_sent() -> None:
    w = World("weya")
    bodies = w.fake.bodies
    context = {**CALL, "type": "customer_request"}
    accept(w.ctx, Event("dnc", Action.ADD, [PhoneInput("12125551234")], context=context))
    w.settle()
    assert bodies == [{"phoneNumber": "12125551234", "type": "customer_request", **CALL}]


def test_404_is_retried_for_the_window_then_dead_lettered() -> None:
    w = World("weya", weya_not_found_retry_seconds=60)
    assert isinstance(w.fake, FakeWeya)
    w.fake.call_records.clear()  # the call record is not written (yet)
    w.add(*numbers(1))
    w.dispatcher.drain(w.ctx)
    for _ in range(3):  # within the window: retried, not dead-lettered
        w.clock.advance(8)
        work.sweep(w.ctx)
        w.dispatcher.drain(w.ctx)
    assert w.ctx.store.dead_letters() == []
    assert len(w.fake.requests) >= 2
    w.settle()  # the window passes
    dead = w.ctx.store.dead_letters()
    assert dead[0]["reason"] == "call_record_not_found"


def test_404_then_record_written_is_delivered() -> None:
    w = World("weya")
    assert isinstance(w.fake, FakeWeya)
    records = set(w.fake.call_records)
    w.fake.call_records.clear()
    w.add(*numbers(1))
    w.dispatcher.drain(w.ctx)
    w.fake.call_records |= records
    w.settle()
    assert w.fake.listed() == {numbers(1)[0][1:]}


def test_never_pushed_twice_and_never_removed() -> None:
    w = World("weya")
    assert isinstance(w.fake, FakeWeya)
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    w.remove(n)
    w.settle()
    w.clock.advance(1)
    w.add(n)
    w.settle()
    assert w.fake.emails == 1
    assert len(w.fake.requests) == 1
    assert w.ctx.store.dead_letters() == []


def test_an_undecodable_answer_is_that_numbers_retry_and_the_others_go_once() -> None:
    # Found by review: a 2xx whose body did not match its Content-Encoding (a proxy's page)
    # raised httpx.DecodingError out of the push; the whole chunk was recovered and sent
    # again, for ever, each add of the nine good numbers emailing the admin once more.
    import httpx

    from tests.fakes.server import mock_transport

    w = World("weya")
    inner = mock_transport(w.fake.handle)
    poison = {"n": "972500000009", "left": 2}

    def handler(request: httpx.Request) -> httpx.Response:
        if b'"972500000009"' in request.content and poison["left"] > 0:
            poison["left"] -= 1
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"{}")
        return inner.handle_request(request)

    w.ctx = w.build(http=httpx.Client(transport=httpx.MockTransport(handler)))
    batch = numbers(10)
    w.add(*batch)
    w.settle()
    assert w.fake.listed() == {n[1:] for n in batch}
    assert w.fake.emails == 10  # one add each: the good ones were never sent again
    answer = w.ctx.store.audit(batch[9])
    assert any(a.get("rsn") == "unreadable_answer" for a in answer)


def test_an_outage_before_the_record_is_found_does_not_use_up_the_404_window() -> None:
    # Found by the third review: the 404 window and the outage budget shared one clock, so
    # after Weya was down 15 minutes the first 404 (the call record three minutes from
    # written) was past the 600 s window: dead-lettered without a single retry.
    w = World("weya")
    assert isinstance(w.fake, FakeWeya)
    n = numbers(1)[0]
    records = set(w.fake.call_records)
    w.fake.call_records.clear()
    w.fake.http_status, w.fake.http_status_times = 503, -1
    w.add(n)
    _run_for(w, 900)
    assert w.ctx.store.dead_letters() == []
    w.fake.http_status = None
    _run_for(w, 180)  # 404s: the record is not written yet
    w.fake.call_records |= records
    _run_for(w, 300)
    assert w.ctx.store.dead_letters() == []
    assert w.fake.listed() == {n[1:]}


def test_a_new_opt_out_weeks_after_a_dropped_retry_starts_a_new_clock() -> None:
    # Found by the third review: an add met an outage, a remove dropped its retry (Weya
    # cannot remove), and the failure's time stayed: a month later the next opt-out's
    # first 503 was "failing for 30 days" and dead-lettered at once.
    w = World("weya")
    assert isinstance(w.fake, FakeWeya)
    n = numbers(1)[0]
    w.fake.http_status, w.fake.http_status_times = 503, 1
    w.add(n)
    w.dispatcher.drain(w.ctx)
    w.remove(n)
    _run_for(w, 60)
    w.clock.advance(30 * 86400)
    w.fake.http_status, w.fake.http_status_times = 503, 1
    w.add(n)
    _run_for(w, 60)
    assert w.ctx.store.dead_letters() == []
    assert w.fake.listed() == {n[1:]}


def test_an_outage_between_two_404s_does_not_use_up_the_window() -> None:
    # Found by the fourth review: the window was wall-clock time since the first 404, so a
    # 404, then Weya down for 20 minutes, then a 404 again dead-lettered the number.
    w = World("weya")
    assert isinstance(w.fake, FakeWeya)
    n = numbers(1)[0]
    records = set(w.fake.call_records)
    w.fake.call_records.clear()
    w.add(n)
    _run_for(w, 10)  # a 404: the record is not written yet
    w.fake.http_status, w.fake.http_status_times = 503, -1
    _run_for(w, 1200)
    w.fake.http_status = None
    _run_for(w, 60)  # 404 again
    w.fake.call_records |= records
    _run_for(w, 300)
    assert w.ctx.store.dead_letters() == []
    assert w.fake.listed() == {n[1:]}


def _run_for(w: World, seconds: float, step: float = 5) -> None:
    end = w.clock.now + seconds
    while w.clock.now < end:
        w.clock.advance(step)
        work.sweep(w.ctx)
        w.dispatcher.drain(w.ctx)
