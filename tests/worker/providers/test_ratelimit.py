"""Shared provider limits: leased concurrency slots, a per-second cap, Retry-After holds."""

from __future__ import annotations

import threading
import time

import fakeredis
import httpx
import pytest

from tests.conftest import FakeClock
from worker.providers.ratelimit import SharedLimitTransport
from worker.state.store import Store


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(fakeredis.FakeRedis(), prefix="rl:", clock=clock)


def test_the_concurrency_cap_is_shared_and_leases_expire(store: Store, clock: FakeClock) -> None:
    take = {"rps": 0.0, "concurrency": 2, "lease_seconds": 10.0}
    assert store.acquire_slot("p", "a", **take) == 0  # type: ignore[arg-type]
    assert store.acquire_slot("p", "b", **take) == 0  # type: ignore[arg-type]
    assert store.acquire_slot("p", "c", **take) > 0  # type: ignore[arg-type]
    store.release_slot("p", "a")
    assert store.acquire_slot("p", "c", **take) == 0  # type: ignore[arg-type]
    # A worker killed mid-request never releases: its lease runs out instead.
    clock.advance(11)
    assert store.acquire_slot("p", "d", **take) == 0  # type: ignore[arg-type]
    assert store.acquire_slot("other", "x", **take) == 0  # type: ignore[arg-type]


def test_the_rate_cap_counts_the_last_second(store: Store, clock: FakeClock) -> None:
    take = {"rps": 3.0, "concurrency": 0, "lease_seconds": 10.0}
    for token in "abc":
        assert store.acquire_slot("p", token, **take) == 0  # type: ignore[arg-type]
        store.release_slot("p", token)
    wait = store.acquire_slot("p", "d", **take)  # type: ignore[arg-type]
    assert 0 < wait <= 1000
    clock.advance(1.001)
    assert store.acquire_slot("p", "d", **take) == 0  # type: ignore[arg-type]


def test_a_hold_answers_429_without_sending(store: Store, clock: FakeClock) -> None:
    sent: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    client = httpx.Client(
        transport=SharedLimitTransport(inner, store, "p", rps=0, concurrency=0, lease_seconds=5)
    )
    store.hold("p", 30)
    response = client.get("http://p.test/x")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) == 30
    assert sent == []
    assert store.redis.zcard(store.key("slots", "p")) == 0  # none taken while held
    clock.advance(30.001)
    assert client.get("http://p.test/x").status_code == 200
    assert len(sent) == 1


def test_requests_through_the_transport_never_exceed_the_cap() -> None:
    store = Store(fakeredis.FakeRedis(), prefix="rl2:")
    active = 0
    peak = 0
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return httpx.Response(200)

    transport = SharedLimitTransport(
        httpx.MockTransport(handler), store, "p", rps=0, concurrency=2, lease_seconds=5
    )
    clients = [httpx.Client(transport=transport) for _ in range(3)]  # three "workers"
    threads = [
        threading.Thread(target=lambda c=c: [c.get("http://p.test/") for _ in range(5)])
        for c in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2
