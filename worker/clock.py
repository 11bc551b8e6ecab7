"""The one clock of a deployment: the Redis server's, so that hosts' clocks need not agree."""

from __future__ import annotations

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

    Until a first reading succeeds it tries on every call and answers this host's clock
    meanwhile (Redis cannot be written then either); a failed or slow later reading keeps
    the last one and tries again after `retry_seconds`."""

    def __init__(
        self,
        client: TimeSource,
        *,
        resync_seconds: float = 30.0,
        retry_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._resync = resync_seconds
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._wall = wall
        # (server seconds, monotonic seconds at that moment), swapped whole: threads share it.
        self._reading: tuple[float, float] | None = None
        self._next_read = 0.0

    def __call__(self) -> float:
        now = self._monotonic()
        if now >= self._next_read:
            self._read(now)
        reading = self._reading
        if reading is None:
            return self._wall()
        server, at = reading
        return server + (now - at)

    def _read(self, now: float) -> None:
        # Set first: threads calling meanwhile use the last reading rather than send their own.
        self._next_read = now + self._retry
        try:
            sent = self._monotonic()
            seconds, micros = self._client.time()
            got = self._monotonic()
        except redis.RedisError:
            if self._reading is None:
                self._next_read = 0.0
            return
        slow = got - sent > _SLOW_READING_SECONDS
        if slow and self._reading is not None:
            return
        self._reading = (seconds + micros / 1e6, (sent + got) / 2)
        # A slow first reading beats this host's clock, but is read again at once.
        self._next_read = 0.0 if slow else got + self._resync
