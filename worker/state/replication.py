"""Waiting for replicas: an accepted write is answered once enough replicas have it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

#: The key the fence write sets (under the store's prefix): see `Replication.wait_in`.
FENCE = "replication:fence"


class ReplicationError(redis.RedisError):
    """A write did not reach enough replicas in time (OPTOUT_REDIS_WAIT_REPLICAS)."""


@dataclass(frozen=True, slots=True)
class Replication:
    """Wait for this many replicas to have a write, on the connection that wrote it."""

    replicas: int
    timeout_ms: int = 1000

    def wait_in(self, pipe: Any, fence_key: str) -> None:
        """Queue the WAIT at the end of `pipe` (sync or asyncio), after a write that always
        replicates. WAIT counts the replicas that have this connection's last replicated
        write; since Redis 7.2 (and in Valkey) a command that replicates nothing leaves
        that offset where it was, so a script that only read (an idempotent replay answered
        `duplicate` from a key an earlier, unacknowledged request wrote; a retry by redis-py
        on a new connection) would have WAIT count replicas that lack the write it answers
        for. The fence is written after every call of the pipeline, so the offset WAIT waits
        for covers whatever they read, from whichever connection it was written."""
        pipe.set(fence_key, "1")
        pipe.wait(self.replicas, self.timeout_ms)

    def check(self, acked: int) -> None:
        if acked < self.replicas:
            raise ReplicationError(
                f"the write reached {acked} of {self.replicas} replicas within {self.timeout_ms} ms"
            )
