"""The accept script from an event loop (the HTTP API), with group commit."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis

from worker.state.ledger import accept_args
from worker.state.records import AcceptOutcome
from worker.state.replication import FENCE, Replication, ReplicationError
from worker.state.store import Store

AsyncClientFactory = Callable[[], aredis.Redis]


@dataclass
class _Loop:
    """AsyncAccept's state in one event loop: an asyncio client belongs to its loop."""

    loop: asyncio.AbstractEventLoop
    client: aredis.Redis
    #: Each waiting event: its script arguments, its answer, and how many numbers it has.
    pending: list[tuple[list[Any], asyncio.Future[Any], int]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class AsyncAccept:
    """The accept script from an event loop, for the HTTP API, with group commit: events
    that arrive while one write is in flight go to Redis together in the next call.

    Through a worker thread and the sync client a one-number event cost ~0.5 ms of API CPU
    (GIL hand-offs); awaited one by one ~0.13 ms; grouped ~0.04 ms, on one connection, and
    Redis fsyncs a group once. A group is one call of the script (lua/accept.lua takes
    several events): under load a group holds ~15 events, and a call of its own cost each
    about a fifth more Redis time (the script's fixed cost). Each event is still accepted
    as a call of its own would accept it, with its own idempotency and answer, and an event
    the script could not accept fails alone; each answer still waits for the AOF fsync."""

    #: Events per call at most: one slow group must not hold thousands of answers.
    GROUP = 200
    #: Numbers per call at most (as accept's WRITE_CHUNK): a group is one script, and a
    #: long script stalls every other Redis call; a larger event still goes alone.
    GROUP_NUMBERS = 200

    def __init__(
        self,
        store: Store,
        client: AsyncClientFactory,
        replication: Replication | None = None,
    ) -> None:
        self.store = store
        self._factory = client
        self._script = store.script("accept")
        self._state: _Loop | None = None
        #: A group's WAIT goes at the end of its pipeline, on the connection that wrote it.
        self.replication = replication

    def _here(self) -> _Loop:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            self._state = _Loop(loop, self._factory())
        return self._state

    async def accept(
        self,
        event: dict[str, Any],
        numbers: list[tuple[str, str]],
        route: dict[str, Any],
        idempotency_ttl_seconds: int,
    ) -> AcceptOutcome:
        store = self.store
        args = accept_args(event, numbers, route, idempotency_ttl_seconds, store.audit_cap, "once")
        state = self._here()
        answer = state.loop.create_future()
        state.pending.append((args, answer, len(numbers)))
        if state.writer is None:
            # Started on demand and gone when idle: nothing is left running on a loop that
            # closes (tests start and stop loops).
            state.writer = state.loop.create_task(self._write(state))
            state.writer.add_done_callback(functools.partial(_stopped, state))
        return AcceptOutcome.decode(await answer)

    async def _write(self, state: _Loop) -> None:
        try:
            while state.pending:
                size, numbers = 1, state.pending[0][2]
                while size < min(self.GROUP, len(state.pending)):
                    numbers += state.pending[size][2]
                    if numbers > self.GROUP_NUMBERS:
                        break
                    size += 1
                group = [(args, answer) for args, answer, _ in state.pending[:size]]
                del state.pending[:size]
                await self._send(state.client, group)
        finally:
            state.writer = None
            _fail_pending(state)  # only when this task was cancelled

    async def _send(
        self, client: aredis.Redis, group: list[tuple[list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            answers, acked = await self._call(client, [args for args, _ in group])
        except BaseException as exc:
            # Every event of a failed group is answered with the error (the API says 503,
            # retry); the next group gets its own try.
            failure = exc if isinstance(exc, Exception) else redis.ConnectionError("cancelled")
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        short: ReplicationError | None = None
        if self.replication is not None:
            try:
                self.replication.check(acked)
            except ReplicationError as exc:
                short = exc
        for (_, answer), result in zip(group, answers, strict=True):
            if answer.done():  # its request went away; the event is written all the same
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            elif short is not None:
                answer.set_exception(short)
            else:
                answer.set_result(result)

    async def _call(self, client: aredis.Redis, events: list[list[Any]]) -> tuple[list[Any], int]:
        """Each event's answer (or the error it failed with), and how many replicas have
        them (when asked to wait)."""
        answer, acked = await self._pipeline(client, events)
        if isinstance(answer, redis.exceptions.NoScriptError):
            # Redis restarted (its script cache is empty): load once, call again.
            await client.script_load(self._script.script)
            answer, acked = await self._pipeline(client, events)
        if isinstance(answer, Exception):
            return [answer] * len(events), acked  # the call failed: every event with it
        answers = [answer] if len(events) == 1 else list(answer)
        if len(answers) != len(events):
            # Never expected; but an event left without an answer would hang its request.
            failure = redis.ResponseError(f"{len(answers)} answers for {len(events)} events")
            return [failure] * len(events), acked
        return [_failed(a) or a for a in answers], acked

    async def _pipeline(self, client: aredis.Redis, events: list[list[Any]]) -> tuple[Any, int]:
        """The group's call's answer (or its error), and how many replicas have it (when
        asked to wait)."""
        flat = [arg for args in events for arg in args]
        # EVALSHA by hand: a pipeline's registered scripts cost a SCRIPT EXISTS round trip on
        # every execute; NOSCRIPT is handled in _call.
        async with client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._script.sha, 0, *self.store.argv(*flat))
            if self.replication is not None:
                self.replication.wait_in(pipe, self.store.key(FENCE))
            answers = list(await pipe.execute(raise_on_error=False))
        if self.replication is None:
            return answers[0], 0
        acked = answers.pop()
        fenced = answers.pop()
        if isinstance(fenced, Exception):
            raise fenced  # e.g. READONLY: the WAIT after it counts nothing of this group
        return answers[0], int(acked) if isinstance(acked, int) else 0


def _fail_pending(state: _Loop) -> None:
    for _, answer, _ in state.pending:
        if not answer.done():
            answer.set_exception(redis.ConnectionError("the accept writer stopped"))
    state.pending.clear()


def _stopped(state: _Loop, writer: asyncio.Task[None]) -> None:
    """A writer cancelled before its first step never ran `_write` (nor its `finally`): its
    events are answered here, and the next event starts a writer of its own."""
    if state.writer is writer:
        state.writer = None
        _fail_pending(state)


def _failed(answer: Any) -> redis.ResponseError | None:
    """An event of a group the script could not accept (lua/accept.lua): its error, as a
    call of its own would have raised it."""
    raw = answer.decode() if isinstance(answer, bytes) else answer
    if not isinstance(raw, str) or not raw.startswith('{"status":"error"'):
        return None
    try:
        message = json.loads(raw).get("error")
    except ValueError:
        message = None
    return redis.ResponseError(str(message or "the accept script failed"))
