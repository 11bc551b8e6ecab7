"""Shared provider limits: leased concurrency slots, a per-second cap, Retry-After holds."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Any

import fakeredis
import httpx
import pytest
import redis

from tests.conftest import FakeClock
from worker.pipeline import lease
from worker.providers.http import send
from worker.providers.ratelimit import LimitedClient, SharedLimitTransport
from worker.state.store import Store


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(fakeredis.FakeRedis(), prefix="rl:", clock=clock)


def test_the_concurrency_cap_is_shared_and_leases_expire(store: Store, clock: FakeClock) -> None:
    take = {"rps": 0.0, "concurrency": 2, "lease_seconds": 10.0}
    assert store.acquire_slot("p", "a", **take) == 0  # type: ignore[arg-type]
    assert store.acquire_slot("p", "b", **take) == 0  # type: ignore[arg-type]
    assert store.acquire_slot("p", "c", **take) > 0  # type: ignore[arg-type]
    store.give_back_slots([("p", "a")])
    assert store.acquire_slot("p", "c", **take) == 0  # type: ignore[arg-type]
    # A worker killed mid-request never releases: its lease runs out instead.
    clock.advance(11)
    assert store.acquire_slot("p", "d", **take) == 0  # type: ignore[arg-type]
    assert store.acquire_slot("other", "x", **take) == 0  # type: ignore[arg-type]


def test_the_rate_cap_counts_the_last_second(store: Store, clock: FakeClock) -> None:
    take = {"rps": 3.0, "concurrency": 0, "lease_seconds": 10.0}
    for token in "abc":
        assert store.acquire_slot("p", token, **take) == 0  # type: ignore[arg-type]
        store.give_back_slots([("p", token)])
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


def test_a_push_s_request_renews_its_lease_with_its_slot_and_is_not_sent_once_it_is_gone(
    store: Store, clock: FakeClock
) -> None:
    sent: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    transport = SharedLimitTransport(inner, store, "p", rps=0, concurrency=2, lease_seconds=5)
    client = LimitedClient(transport)
    store.redis.set(store.key("chunk", "7"), "{}")
    store.redis.zadd(store.key("leases"), {"7": store.now_ms() + 1000})
    renewals: list[int] = []

    def renew() -> bool:  # the push's own renewal: a LimitedClient's request needs none
        renewals.append(1)
        return True

    clock.advance(0.5)
    with lease.holding(renew, "7", 60):
        assert send(client, "POST", "http://p.test/x", auth_setting="P_KEY").status_code == 200
        assert store.redis.zscore(store.key("leases"), "7") == store.now_ms() + 60_000
        store.redis.delete(store.key("chunk", "7"))  # completed or recovered meanwhile
        with pytest.raises(lease.LeaseLostError):
            send(client, "POST", "http://p.test/x", auth_setting="P_KEY")
    assert len(sent) == 1
    assert renewals == []
    assert store.redis.zcard(store.key("slots", "p")) == 0  # the slot taken was given back
    # Outside a push, nothing is renewed; a plain client's request renews by `send`.
    assert client.get("http://p.test/y").status_code == 200
    with lease.holding(renew, "7", 60):
        plain = httpx.Client(transport=inner)
        assert send(plain, "GET", "http://p.test/z", auth_setting="P_KEY").status_code == 200
    assert renewals == [1]


def test_a_holder_that_names_no_chunk_is_renewed_its_own_way_before_the_slot(
    store: Store,
) -> None:
    sent: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    client = LimitedClient(
        SharedLimitTransport(inner, store, "p", rps=0, concurrency=0, lease_seconds=5)
    )
    with lease.holding(lambda: False), pytest.raises(lease.LeaseLostError):
        client.get("http://p.test/x")
    assert sent == []
    assert store.redis.zcard(store.key("slots", "p")) == 0


def test_a_push_s_slot_is_given_back_in_its_next_round_trip_not_one_of_its_own(
    store: Store,
) -> None:
    held: list[int] = []
    slots_key = store.key("slots", "p")

    def handler(request: httpx.Request) -> httpx.Response:
        held.append(int(store.redis.zcard(slots_key)))  # slots counted while it is sent
        return httpx.Response(200)

    # A cap of one: had the second request waited for the first's slot to be given back
    # by the push's completion, it would never have been sent (`max_wait_seconds`).
    client = LimitedClient(
        SharedLimitTransport(
            httpx.MockTransport(handler),
            store,
            "p",
            rps=0,
            concurrency=1,
            lease_seconds=5,
            max_wait_seconds=0.2,
        )
    )
    store.redis.set(store.key("chunk", "7"), "{}")
    done = lease.Slots()
    calls: list[str] = []
    original = store.give_back_slots
    store.give_back_slots = lambda *a: calls.append("release") or original(*a)  # type: ignore[method-assign]
    with lease.holding(lambda: True, "7", 60, done):
        assert client.get("http://p.test/1").status_code == 200
        assert store.redis.zcard(slots_key) == 1  # kept for the push's next round trip
        assert client.get("http://p.test/2").status_code == 200  # which gave it back
    assert held == [1, 1]
    assert calls == []  # no round trip of its own
    left = done.take()
    assert [provider for provider, _ in left] == ["p"]
    assert store.redis.zcard(slots_key) == 1
    store.give_back_slots(left)  # as the push's completion does, in its own round trip
    assert store.redis.zcard(slots_key) == 0


def _unlimited(store: Store) -> LimitedClient:
    """Provider `p`'s client, its requests answered 200, through slots with no cap."""
    transport = SharedLimitTransport(httpx.MockTransport(lambda r: httpx.Response(200)), store,
                                     "p", rps=0, concurrency=0, lease_seconds=5)  # fmt: skip
    return LimitedClient(transport)


def test_slots_taken_for_an_acquire_that_failed_are_kept_for_a_later_round_trip(
    store: Store,
) -> None:
    client = _unlimited(store)
    store.redis.set(store.key("chunk", "7"), "{}")
    done = lease.Slots()
    with lease.holding(lambda: True, "7", 60, done):
        client.get("http://p.test/1")
        original = store.acquire_slot

        def down(*args: Any, **kwargs: Any) -> int | None:
            raise redis.ConnectionError("Redis went away")

        store.acquire_slot = down  # type: ignore[method-assign]
        with pytest.raises(redis.ConnectionError):
            client.get("http://p.test/2")
        store.acquire_slot = original  # type: ignore[method-assign]
    assert len(done.take()) == 1  # still to give back: the push's error path does


def _counting_acquires(store: Store) -> list[str]:
    asked: list[str] = []
    original = store.acquire_slot

    def acquire(provider: str, token: str, **kwargs: Any) -> int | None:
        asked.append(token)
        return original(provider, token, **kwargs)

    store.acquire_slot = acquire  # type: ignore[method-assign]
    return asked


def test_a_push_s_first_request_is_sent_on_the_slot_its_chunk_s_opening_took(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "FIRST_SLOT_SECONDS", 60.0)  # however slow this machine is
    client = _unlimited(store)
    store.redis.set(store.key("chunk", "7"), "{}")
    assert store.acquire_slot("p", "opened", rps=0, concurrency=0, lease_seconds=5) == 0
    asked = _counting_acquires(store)
    done = lease.Slots(("p", "opened"), time.monotonic())
    with lease.holding(lambda: True, "7", 60, done):
        client.get("http://p.test/1")  # on the slot the opening took: no round trip
        assert asked == []
        client.get("http://p.test/2")  # (a bulk request halved) asks as any other
    assert len(asked) == 1
    assert done.take() == [("p", asked[0])]  # the first was given back in that acquire
    assert store.redis.zrange(store.key("slots", "p"), 0, -1) == [asked[0].encode()]


def test_a_first_slot_of_another_provider_or_taken_too_long_ago_is_given_back_not_used(
    store: Store,
) -> None:
    client = _unlimited(store)
    store.redis.set(store.key("chunk", "7"), "{}")
    asked = _counting_acquires(store)
    now = time.monotonic()
    for slot, taken_at in ((("q", "other"), now), (("p", "old"), now - 1.01)):
        store.redis.zadd(store.key("slots", slot[0]), {slot[1]: store.now_ms() + 5000})
        done = lease.Slots(slot, taken_at)
        with lease.holding(lambda: True, "7", 60, done):
            client.get("http://p.test/1")  # its lease renewed with a slot of its own
        assert len(asked) == 1
        assert store.redis.zscore(store.key("slots", slot[0]), slot[1]) is None
        store.give_back_slots(done.take())
        asked.clear()


def test_a_first_slot_is_not_sent_so_late_that_the_next_seconds_request_follows_it_closely(
    store: Store, clock: FakeClock
) -> None:
    # The rate cap counts a request from when its slot was taken. A first slot taken as its
    # chunk was opened and sent half a second later (the chain's round trip was followed by
    # a slow broker publish: push.py's _recorded) would leave its rate entry lapsing half a
    # second after the request went out: another worker's request then follows it within
    # half a second, two requests in one second under a cap of one.
    sent: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(store.now_ms())
        return httpx.Response(200)

    inner = httpx.MockTransport(answer)
    transport = SharedLimitTransport(
        inner, store, "p", rps=1, concurrency=0, lease_seconds=5, max_wait_seconds=0.01
    )
    client = LimitedClient(transport)
    store.redis.set(store.key("chunk", "7"), "{}")
    assert store.acquire_slot("p", "opened", rps=1, concurrency=0, lease_seconds=5) == 0
    clock.advance(0.5)
    done = lease.Slots(("p", "opened"), time.monotonic() - 0.5)
    with lease.holding(lambda: True, "7", 60, done), contextlib.suppress(httpx.PoolTimeout):
        client.get("http://p.test/chunk")
    clock.advance(0.5)
    client.get("http://p.test/other-worker")  # outside any push: a slot of its own
    assert all(b - a >= 1000 for a, b in itertools.pairwise(sent)), sent
