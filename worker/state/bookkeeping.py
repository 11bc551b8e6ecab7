"""Ingress bookkeeping: inputs kept for a person to review, and counters."""

from __future__ import annotations

import json
from typing import Any, cast

from worker.state.codec import decode, text
from worker.state.keyspace import Keyspace


class Bookkeeping(Keyspace):
    """`review:{source}` and `counts:{group}`."""

    def keep_for_review(self, source: str, entry: dict[str, Any], keep: int = 1000) -> None:
        """Keep an input we would not guess about for a person to read (newest first)."""
        key = self.key("review", source)
        pipe = self.redis.pipeline()
        pipe.lpush(key, json.dumps({"at": self.now_ms(), **entry}, default=str))
        pipe.ltrim(key, 0, keep - 1)
        pipe.execute()

    def reviews(self, source: str, limit: int = 100) -> list[dict[str, Any]]:
        raw = cast(list[Any], self.redis.lrange(self.key("review", source), 0, limit - 1))
        return [decode(entry) for entry in raw]

    def count(self, group: str, name: str) -> None:
        self.redis.hincrby(self.key("counts", group), name, 1)

    def counts_of(self, group: str) -> dict[str, int]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("counts", group)))
        return {text(k): int(v) for k, v in raw.items()}
