"""The one clock of a deployment: the Redis server's, so that hosts' clocks need not agree."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

#: A reading whose round trip took longer than this says little about when TIME was read.
_SLOW_READING_SECONDS = 0.2


class TimeSource(Protocol):
    """What the clock needs of a Redis client."""

    def time(self) -> Any: ...


class ServerClock:
    """Seconds since 1970 by the Redis server's clock, as this process reads it: TIME at first
    use and every `resync_seconds`, the monotonic clock in between (no round trip per call,
    and a step of this host's wall clock does not move it). Every process of a deployment,
    on whatever host, then stamps events and judges leases, retries and announced targets on
    the same clock, within a few milliseconds; the scripts read TIME themselves (see
    lua/prelude.lua), and this clock serves what Python decides.

    The first call reads TIME and raises the client's error when it cannot: a time made up
    from this host's clock could date an opt-out before a remove it came after. Later calls
    do no I/O (an event loop must not wait on one): a reading falling due is taken by a
    background thread (`spawn`), and one that fails or is slow keeps the last and is tried
    again after `retry_seconds`."""

    def __init__(
        self,
        client: TimeSource,
        *,
        resync_seconds: float = 30.0,
        retry_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._client = client
        self._resync = resync_seconds
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._spawn = spawn or _in_background
        # (server seconds, monotonic seconds at that moment), swapped whole: threads share it.
        self._reading: tuple[float, float] | None = None
        self._next_read = 0.0

    def __call__(self) -> float:
        now = self._monotonic()
        reading = self._reading
        if reading is None:
            reading = self._read()
        elif now >= self._next_read:
            # Set first: calls meanwhile use the last reading rather than start their own.
            self._next_read = now + self._retry
            self._spawn(self._refresh)
        server, at = reading
        return server + (now - at)

    def _read(self) -> tuple[float, float]:
        sent = self._monotonic()
        seconds, micros = self._client.time()
        got = self._monotonic()
        slow = got - sent > _SLOW_READING_SECONDS
        if slow and self._reading is not None:
            return self._reading
        self._reading = (int(seconds) + int(micros) / 1e6, (sent + got) / 2)
        # A slow first reading beats none, but is read again at the next call.
        self._next_read = sent if slow else got + self._resync
        return self._reading

    def _refresh(self) -> None:
        # On failure the last reading holds; tried again after `retry_seconds`.
        with contextlib.suppress(redis.RedisError):
            self._read()


def _in_background(read: Callable[[], None]) -> None:
    threading.Thread(target=read, name="server-clock", daemon=True).start()
