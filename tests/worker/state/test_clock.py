"""The server's clock: one time for every process, whatever its host's clock says."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis
from fakeredis.commands_mixins import server_mixin

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import Router, env_for, make_fake
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.providers.base import Action
from worker.runtime.wiring import build_context
from worker.state.clock import ServerClock


class FakeServer:
    """A Redis that answers TIME from a settable clock, can be down, can answer slowly (its
    round trip advances the caller's monotonic clock), and can hang until let go."""

    def __init__(self, now: float, monotonic: FakeMonotonic) -> None:
        self.now = now
        self.down = False
        self.round_trip = 0.001
        self.reads = 0
        self.hang: threading.Event | None = None
        self._monotonic = monotonic

    def time(self) -> tuple[int, int]:
        self.reads += 1
        if self.hang is not None:
            self.hang.wait(10)
        if self.down:
            raise redis.ConnectionError("Redis is down")
        self._monotonic.now += self.round_trip / 2
        seconds, fraction = divmod(self.now, 1)
        self._monotonic.now += self.round_trip / 2
        return int(seconds), round(fraction * 1e6)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._monotonic.now += seconds


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Later:
    """Background readings, run when the test says."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def __call__(self, read: Callable[[], None]) -> None:
        self.waiting.append(read)

    def run(self) -> None:
        while self.waiting:
            self.waiting.pop(0)()


SERVER = 1_800_003_600.0  # an hour ahead of this host, whose clock the tests never read


def _clock() -> tuple[ServerClock, FakeServer, FakeMonotonic, Later]:
    mono = FakeMonotonic()
    server = FakeServer(SERVER, mono)
    later = Later()
    clock = ServerClock(server, resync_seconds=30, retry_seconds=1, monotonic=mono, spawn=later)
    return clock, server, mono, later


def test_it_tells_the_servers_time_and_reads_it_once_per_resync_in_the_background() -> None:
    clock, server, _, later = _clock()
    assert clock() == pytest.approx(SERVER, abs=0.01)
    server.advance(10)
    assert clock() == pytest.approx(SERVER + 10, abs=0.01)
    assert server.reads == 1  # the monotonic clock counted the ten seconds
    server.advance(25)
    assert clock() == pytest.approx(SERVER + 35, abs=0.01)
    assert server.reads == 1 and len(later.waiting) == 1  # due: read, but not by the caller
    clock()
    assert len(later.waiting) == 1  # one reading at a time
    later.run()
    assert server.reads == 2


def test_it_follows_the_server_when_the_two_drift_apart() -> None:
    clock, server, mono, later = _clock()
    clock()
    server.now += 0.5  # the server's clock stepped (NTP) or this host's monotonic drifted
    mono.now += 31
    server.now += 31
    assert clock() == pytest.approx(SERVER + 31, abs=0.01)  # the last reading, counted on
    later.run()
    assert clock() == pytest.approx(server.now, abs=0.01)


def test_it_never_makes_up_a_time_it_could_not_read() -> None:
    # Found by the sixteenth review: until a first reading, the clock told this host's
    # time, and an add accepted then was dated by it: an hour behind, a remove sent after
    # it won, and the number was unblocked.
    clock, server, _, _ = _clock()
    server.down = True
    with pytest.raises(redis.ConnectionError):
        clock()
    server.down = False
    assert clock() == pytest.approx(SERVER, abs=0.01)


def test_a_server_down_later_keeps_the_last_reading_and_is_tried_again_after_a_while() -> None:
    clock, server, mono, later = _clock()
    clock()
    server.down = True
    server.advance(31)
    assert clock() == pytest.approx(SERVER + 31, abs=0.01)
    later.run()  # fails
    assert clock() == pytest.approx(SERVER + 31, abs=0.01)
    assert server.reads == 2 and not later.waiting  # no new try until the retry time
    mono.now += 1
    server.now += 1
    server.down = False
    clock()
    later.run()
    assert server.reads == 3
    assert clock() == pytest.approx(SERVER + 32, abs=0.01)


def test_a_slow_reading_does_not_replace_a_good_one() -> None:
    clock, server, _, later = _clock()
    clock()
    server.advance(31)
    server.round_trip = 5.0  # an answer this late says little about when TIME was read
    server.now += 100  # (and what it says is far off)
    clock()
    later.run()
    assert clock() == pytest.approx(SERVER + 31 + 5, abs=0.01)  # the last reading, counted on
    server.round_trip = 0.001
    clock()
    later.run()
    assert clock() == pytest.approx(server.now, abs=0.01)


def test_a_slow_first_reading_is_taken_and_read_again_at_once() -> None:
    clock, server, _, later = _clock()
    server.round_trip = 5.0
    assert clock() == pytest.approx(SERVER - 2.5, abs=0.01)  # when it was asked
    server.round_trip = 0.001
    clock()
    later.run()
    assert server.reads == 2
    assert clock() == pytest.approx(server.now, abs=0.01)


def test_a_caller_never_waits_for_a_reading_after_the_first() -> None:
    # Found by the sixteenth review: a reading falling due was taken by whoever called, the
    # API's event loop too, and a Redis that hung froze every request of the process.
    mono = FakeMonotonic()
    server = FakeServer(SERVER, mono)
    clock = ServerClock(server, resync_seconds=30, monotonic=mono)  # real background threads
    clock()
    server.hang = threading.Event()
    mono.now += 31
    started = time.monotonic()
    assert clock() == pytest.approx(SERVER + 31, abs=0.01)
    assert time.monotonic() - started < 1
    assert server.reads == 2  # the reading hangs in its own thread
    server.hang.set()


@pytest.fixture
def server_an_hour_ahead(monkeypatch: pytest.MonkeyPatch) -> float:
    """fakeredis's TIME, and only it, an hour ahead of this host (Redis on another host)."""

    class _Time:
        @staticmethod
        def time() -> float:
            return time.time() + 3600

    monkeypatch.setattr(server_mixin, "time", _Time)
    return 3600.0


def test_a_process_without_a_clock_of_its_own_lives_by_the_servers(
    server_an_hour_ahead: float,
) -> None:
    # Found by the fifteenth review: accepts, expiries and the sweep judged a target live by
    # their host's clock against a time another host announced. A host whose clock ran ahead
    # of the announcer's by more than 2/3 of the target TTL staged an opt-out for nothing
    # there, and no catch-up followed. Now a script reads the server's time as it runs.
    client: Any = fakeredis.FakeRedis()
    router = Router({"voicenter": make_fake("voicenter")})
    settings = make_settings(env_for("voicenter", "http://voicenter.test"), target_ttl_seconds=30)
    ctx = build_context(
        settings, client=client, http=router.client(), dispatcher=QueueDispatcher(),
        rng=random.Random(1),
    )  # fmt: skip
    assert ctx.store.argv()[1] == ""  # the scripts read the time themselves
    ctx.ensure_registered()
    announced = client.zscore("optout:targets:live", "voicenter")
    server_ms = (time.time() + server_an_hour_ahead) * 1000
    assert announced == pytest.approx(server_ms + 30_000, abs=2000)
    assert ctx.store.now_ms() == pytest.approx(server_ms, abs=2000)

    n = "+972501234567"
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n)]))
    assert ctx.store.audit(n)[-1]["at"] == pytest.approx(server_ms, abs=2000)
    # Staged for the target announced, at the server's time.
    assert client.zscore("optout:stage:voicenter:add", n) == pytest.approx(server_ms, abs=2000)
