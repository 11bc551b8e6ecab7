"""OPTOUT_REDIS_WAIT_REPLICAS against a real primary and replica: an accept is answered only
once a replica has its write, from threads and from the API's group commit alike."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio as aredis

from config import load_settings
from tests.fakes.dispatch import QueueDispatcher
from worker.ingress import cdr as cdrs
from worker.pipeline.accept import Event, PhoneInput, StoreUnavailableError, accept, accept_async
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.embedded import free_port, redis_server_binary
from worker.runtime.wiring import build_context
from worker.state.replication import ReplicationError

pytestmark = pytest.mark.integration


def _binary() -> str:
    # WAIT's offset after a command that replicated nothing differs between servers (it
    # moves on to the primary's on Redis up to 7.0, stays put from 7.2 and in Valkey): name
    # another server here to run these against it.
    return os.environ.get("OPTOUT_TEST_REDIS_SERVER") or redis_server_binary()


def _server(port: int, *extra: str) -> subprocess.Popen[bytes]:
    data = tempfile.mkdtemp(prefix="optout-repl-")
    args = [_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", data, *extra]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.05)


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    primary_port, replica_port = free_port(), free_port()
    primary = _server(primary_port)
    replica = _server(replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    client = redis.Redis(port=primary_port)
    try:
        _wait(lambda: _answers(client) and client.info("replication")["connected_slaves"] == 1)
        _wait(lambda: redis.Redis(port=replica_port).info("replication")["master_link_status"]
              == "up")  # fmt: skip
        yield f"redis://127.0.0.1:{primary_port}/0", replica
    finally:
        for process in (replica, primary):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


#: How long a WAIT may take where the replica is expected to answer: generous, for a loaded
#: machine (a replica that answers late would fail the accept, not the property tested).
PATIENT_MS = 15_000


def _pipeline(url: str, wait_ms: int = PATIENT_MS) -> Context:
    settings = load_settings({
        "REDIS_URL": url, "OPTOUT_REDIS_WAIT_REPLICAS": "1", "OPTOUT_KEY_PREFIX": "repl:",
        "OPTOUT_REDIS_WAIT_TIMEOUT_MS": str(wait_ms),
    })  # fmt: skip
    return build_context(settings, dispatcher=QueueDispatcher())


def _event(i: int) -> Event:
    return Event("api", Action.ADD, [PhoneInput(f"+9725010{i:05d}")])


def _concurrently(ctx: Context, start: int, count: int) -> list[bool]:
    """`count` accepts from threads, while others read through the same client (number
    lookups, readiness checks): their connections have written nothing."""
    reading = threading.Event()

    def reader() -> None:
        while not reading.is_set():
            ctx.store.ledger("+972500000000")

    def one(i: int) -> bool:
        try:
            accept(ctx, _event(i))
            return True
        except StoreUnavailableError:
            return False

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(start, start + count)))
    finally:
        reading.set()
        for thread in readers:
            thread.join()


async def _on_the_loop(ctx: Context, start: int, count: int) -> list[bool]:
    async def one(i: int) -> bool:
        await asyncio.sleep(0.01 * (i % 5))  # in several groups
        try:
            await accept_async(ctx, _event(i))
            return True
        except StoreUnavailableError:
            return False

    return list(await asyncio.gather(*(one(i) for i in range(start, start + count))))


def test_no_accept_is_answered_before_a_replica_has_it(
    primary_and_replica: tuple[str, subprocess.Popen[bytes]],
) -> None:
    # Issue 13, item 7: WAIT went out on whichever pooled connection was free; on one that
    # had written nothing it returned at once, and the API answered 202 regardless.
    url, replica = primary_and_replica
    ctx = _pipeline(url)
    ctx.ensure_registered()
    assert all(_concurrently(ctx, 0, 20))
    assert all(asyncio.run(_on_the_loop(ctx, 100, 20)))

    impatient = _pipeline(url, wait_ms=500)
    impatient.ensure_registered()
    os.kill(replica.pid, signal.SIGSTOP)  # the replica stops acknowledging
    try:
        assert not any(_concurrently(impatient, 200, 20))
        assert not any(asyncio.run(_on_the_loop(impatient, 300, 20)))
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert all(_concurrently(ctx, 400, 10))


class _Log:
    """(connection, command) for every command sent, in order."""

    entries: ClassVar[list[tuple[int, str]]] = []


class _RecordingConnection(redis.Connection):
    def pack_command(self, *args: Any) -> Any:
        _Log.entries.append((id(self), str(args[0]).upper()))
        return super().pack_command(*args)

    def pack_commands(self, commands: Any) -> Any:
        # The sync client packs a pipeline's commands without pack_command.
        commands = list(commands)
        for args in commands:
            _Log.entries.append((id(self), str(args[0]).upper()))
        return super().pack_commands(commands)


class _AsyncRecordingConnection(aredis.Connection):
    def pack_command(self, *args: Any) -> Any:
        _Log.entries.append((id(self), str(args[0]).upper()))
        return super().pack_command(*args)


class _Rotating(redis.ConnectionPool):
    """Hands out the connection released longest ago, not the one just released: a busy
    process's pool does that too, and it shows where a command really goes."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._available_connections.reverse()
        return super().get_connection(*args, **kwargs)


class _AsyncRotating(aredis.ConnectionPool):
    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._available_connections.reverse()
        return await super().get_connection(*args, **kwargs)


def _every_wait_follows_a_write_on_its_connection() -> None:
    # A script's call may replicate nothing (a duplicate only reads): the command right
    # before each WAIT is the fence, a SET, which always replicates, after the scripts.
    last: dict[int, list[str]] = {}
    for connection, command in _Log.entries:
        seen = last.setdefault(connection, [])
        if command == "WAIT":
            assert seen[-2:] in (["EVALSHA", "SET"], ["EVAL", "SET"]), _Log.entries[-20:]
        seen.append(command)


def test_the_wait_goes_out_on_the_connection_that_wrote(
    primary_and_replica: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = primary_and_replica
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    settings = load_settings({
        "REDIS_URL": url, "OPTOUT_REDIS_WAIT_REPLICAS": "1", "OPTOUT_KEY_PREFIX": "repl2:",
        "OPTOUT_REDIS_WAIT_TIMEOUT_MS": str(PATIENT_MS),
    })  # fmt: skip
    client = redis.Redis(
        connection_pool=_Rotating(connection_class=_RecordingConnection, port=port)
    )

    def async_client() -> aredis.Redis:
        pool = _AsyncRotating(connection_class=_AsyncRecordingConnection, port=port)
        return aredis.Redis(connection_pool=pool)

    ctx = build_context(
        settings, client=client, dispatcher=QueueDispatcher(), async_client=async_client
    )
    ctx.ensure_registered()
    for _ in range(3):
        client.ping()  # a few connections in the pool
    # Each path on its own, so that neither passes for want of a WAIT (how many groups the
    # loop's accepts make depends on the machine's load).
    _Log.entries.clear()
    assert all(_concurrently(ctx, 0, 8))
    for i in range(5):
        accept(ctx, _event(50 + i))
    assert sum(1 for _, command in _Log.entries if command == "WAIT") >= 5
    _every_wait_follows_a_write_on_its_connection()
    _Log.entries.clear()
    assert all(asyncio.run(_on_the_loop(ctx, 100, 12)))
    assert sum(1 for _, command in _Log.entries if command == "WAIT") >= 1
    _every_wait_follows_a_write_on_its_connection()


def test_a_replay_is_not_answered_before_a_replica_has_what_it_replays(
    primary_and_replica: tuple[str, subprocess.Popen[bytes]],
) -> None:
    # The first request's write reached no replica (503); the sender's retry finds its
    # idempotency key and is answered `duplicate`, a script that writes nothing. WAIT on a
    # connection whose last replicated write came before (Redis 7.2+, Valkey) returned
    # at once with every replica counted, and the API answered 2xx for an opt-out that a
    # failover to that replica would lose.
    url, replica = primary_and_replica
    first = _pipeline(url, wait_ms=300)
    first.ensure_registered()
    event = Event("api", Action.ADD, [PhoneInput("+972501234567")], idempotency_key="replay-1")
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailableError):
            accept(first, event)
        with pytest.raises(StoreUnavailableError):
            accept(_pipeline(url, wait_ms=300), event)  # another process: fresh connections
        with pytest.raises(StoreUnavailableError):
            asyncio.run(accept_async(_pipeline(url, wait_ms=300), event))
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert accept(_pipeline(url), event).duplicate


def test_a_cdr_kept_for_review_is_answered_only_once_a_replica_has_it(
    primary_and_replica: tuple[str, subprocess.Popen[bytes]],
) -> None:
    # Voicenter is told 200 "kept for review" and never sends the CDR again: a failover that
    # lost the case would lose a probable opt-out meant for a person. The review queue's
    # write waits for a replica as an accept does; too few is a 503, and Voicenter retries.
    url, replica = primary_and_replica
    review = cdrs.Review("unknown_call_type", "Conference", {"ivruniqueid": "call-1"})
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        impatient = _pipeline(url, wait_ms=300)
        with pytest.raises(ReplicationError):
            cdrs.book(impatient.store, review, impatient.replication())
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    ctx = _pipeline(url)
    assert cdrs.book(ctx.store, review, ctx.replication()) is None
    calls = [case["cdr"]["ivruniqueid"] for case in ctx.store.reviews(cdrs.SOURCE)]
    assert calls == ["call-1", "call-1"]  # the refused try is kept too: a person sees both
