"""Waiting for replicas: an accepted write is answered once enough replicas have it."""

from __future__ import annotations

from dataclasses import dataclass

import redis


class ReplicationError(redis.RedisError):
    """A write did not reach enough replicas in time (OPTOUT_REDIS_WAIT_REPLICAS)."""


@dataclass(frozen=True, slots=True)
class Replication:
    """Wait for this many replicas to have a write, on the connection that wrote it."""

    replicas: int
    timeout_ms: int = 1000

    def check(self, acked: int) -> None:
        if acked < self.replicas:
            raise ReplicationError(
                f"the write reached {acked} of {self.replicas} replicas within {self.timeout_ms} ms"
            )
