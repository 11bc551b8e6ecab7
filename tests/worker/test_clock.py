"""The server's clock: one time for every process, whatever its host's clock says."""

from __future__ import annotations

import random
import time
from typing import Any

import fakeredis
import pytest
import redis
from fakeredis.commands_mixins import server_mixin

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import Router, env_for, make_fake
from worker.accept import Event, PhoneInput, accept
from worker.clock import ServerClock
from worker.providers.base import Action
from worker.runtime import build_pipeline


class FakeServer:
    """A Redis that answers TIME from a settable clock, can be down, and can answer slowly
    (its round trip advances the caller's monotonic clock)."""

    def __init__(self, now: float, monotonic: FakeMonotonic) -> None:
        self.now = now
        self.down = False
        self.round_trip = 0.001
        self.reads = 0
        self._monotonic = monotonic

    def time(self) -> tuple[int, int]:
        self.reads += 1
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


HOST = 1_800_000_000.0


def _clock(server_ahead_by: float = 3600.0) -> tuple[ServerClock, FakeServer, FakeMonotonic]:
    """A clock reading a server `server_ahead_by` seconds ahead of this host."""
    mono = FakeMonotonic()
    server = FakeServer(HOST + server_ahead_by, mono)
    clock = ServerClock(
        server, resync_seconds=30, retry_seconds=1, monotonic=mono, wall=lambda: HOST
    )
    return clock, server, mono


def test_it_tells_the_servers_time_not_the_hosts_and_reads_it_once_per_resync() -> None:
    clock, server, _ = _clock()
    assert clock() == pytest.approx(HOST + 3600, abs=0.01)
    server.advance(10)
    assert clock() == pytest.approx(HOST + 3610, abs=0.01)
    assert server.reads == 1  # the monotonic clock counted the ten seconds
    server.advance(25)
    clock()
    assert server.reads == 2


def test_it_follows_the_server_when_the_two_drift_apart() -> None:
    clock, server, mono = _clock()
    clock()
    server.now += 0.5  # the server's clock stepped (NTP) or this host's monotonic drifted
    mono.now += 29
    assert clock() == pytest.approx(HOST + 3629, abs=0.01)  # not read again yet
    mono.now += 2
    server.now += 2 + 29
    assert clock() == pytest.approx(server.now, abs=0.01)


def test_until_the_server_is_read_it_tries_every_call_and_tells_the_hosts_time() -> None:
    clock, server, _ = _clock()
    server.down = True
    assert clock() == HOST
    assert clock() == HOST
    assert server.reads == 2
    server.down = False
    assert clock() == pytest.approx(HOST + 3600, abs=0.01)


def test_a_server_down_later_keeps_the_last_reading_and_is_tried_again_after_a_while() -> None:
    clock, server, mono = _clock()
    clock()
    server.down = True
    server.advance(31)
    assert clock() == pytest.approx(HOST + 3631, abs=0.01)
    assert clock() == pytest.approx(HOST + 3631, abs=0.01)
    assert server.reads == 2  # one failed try, then none until the retry time
    mono.now += 1
    server.down = False
    server.now += 1
    assert clock() == pytest.approx(HOST + 3632, abs=0.01)
    assert server.reads == 3


def test_a_slow_reading_does_not_replace_a_good_one() -> None:
    clock, server, _ = _clock()
    clock()
    server.advance(31)
    server.round_trip = 5.0  # an answer this late says little about when TIME was read
    server.now += 100  # (and what it says is far off)
    assert clock() == pytest.approx(HOST + 3631, abs=0.01)  # as the last reading says
    server.round_trip = 0.001
    server.advance(1)
    assert clock() == pytest.approx(server.now, abs=0.01)
    assert server.reads == 3


def test_a_slow_first_reading_is_taken_and_read_again_at_once() -> None:
    clock, server, _ = _clock()
    server.round_trip = 5.0
    assert clock() == pytest.approx(HOST + 3600 - 2.5, abs=0.01)
    server.round_trip = 0.001
    assert clock() == pytest.approx(server.now, abs=0.01)
    assert server.reads == 2


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
    pipe = build_pipeline(
        settings, client=client, http=router.client(), dispatcher=QueueDispatcher(),
        rng=random.Random(1),
    )  # fmt: skip
    assert pipe.store.argv()[1] == ""  # the scripts read the time themselves
    pipe.ensure_registered()
    announced = client.zscore("optout:targets:live", "voicenter")
    server_ms = (time.time() + server_an_hour_ahead) * 1000
    assert announced == pytest.approx(server_ms + 30_000, abs=2000)
    assert pipe.store.now_ms() == pytest.approx(server_ms, abs=2000)

    n = "+972501234567"
    accept(pipe, Event("api", Action.ADD, [PhoneInput(n)]))
    assert pipe.store.audit(n)[-1]["at"] == pytest.approx(server_ms, abs=2000)
    # Staged for the target announced, at the server's time.
    assert client.zscore("optout:stage:voicenter:add", n) == pytest.approx(server_ms, abs=2000)
