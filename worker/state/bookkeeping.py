"""Ingress bookkeeping: inputs kept for a person to review, and counters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from worker.state.codec import decode, text
from worker.state.keyspace import Keyspace
from worker.state.replication import Replication

#: Review cases kept per source. More would be dropped oldest first: each drop is answered
#: (and counted as `overflowed`) so it is logged and visible, never silent.
REVIEW_KEEP = 1000
#: Settled cases (accepted, dropped) kept per source; each is also an `audit` log line.
REVIEWED_KEEP = 1000


@dataclass(frozen=True)
class KeptReview:
    """A review case as Redis holds it: its source, the exact stored JSON (what identifies
    it: removing one takes its exact text) and that JSON decoded."""

    source: str
    raw: str
    entry: dict[str, Any]

    @property
    def id(self) -> str:
        """Stable while it is kept, and safe to type in a shell: source-hexdigits."""
        return f"{self.source}-{hashlib.sha256(self.raw.encode()).hexdigest()[:12]}"


class Bookkeeping(Keyspace):
    """`review:{source}`, `reviews`, `reviewed:{source}`, `counts:{group}` and
    `metrics:handed`."""

    def keep_for_review(
        self,
        source: str,
        entry: dict[str, Any],
        keep: int = REVIEW_KEEP,
        replication: Replication | None = None,
    ) -> list[dict[str, Any]]:
        """Keep an input we would not guess about for a person to read (newest first);
        answer the oldest ones the cap pushed out (none, as a rule). With `replication` it
        returns only once enough replicas have the case (the sender is told it is kept)."""
        raw = json.dumps({"at": self.now_ms(), **entry}, default=str)
        args = self.argv(source, raw, keep)
        pushed_out = cast(list[Any], self._run_replicated("review", args, replication))
        return [decode(old) for old in pushed_out]

    def reviews(self, source: str, limit: int = 100) -> list[dict[str, Any]]:
        raw = cast(list[Any], self.redis.lrange(self.key("review", source), 0, limit - 1))
        return [decode(entry) for entry in raw]

    def review_sources(self) -> set[str]:
        """The sources that have kept a case for review."""
        return {text(s) for s in cast(set[Any], self.redis.smembers(self.key("reviews")))}

    def kept_reviews(self, source: str) -> list[KeptReview]:
        """Every case kept for `source`, oldest first."""
        raw = cast(list[Any], self.redis.lrange(self.key("review", source), 0, -1))
        return [KeptReview(source, text(r), decode(r)) for r in reversed(raw)]

    def reviews_waiting(self, sources: list[str]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for source in sources:
            pipe.llen(self.key("review", source))
        return dict(zip(sources, (int(n) for n in pipe.execute()), strict=True))

    def settle_review(
        self, kept: KeptReview, outcome: str, record: dict[str, Any], *, always: bool = False
    ) -> bool:
        """Take a case off the queue and record how it was settled (`reviewed:{source}`,
        counted by outcome) in one step (lua/settle.lua): only the call that removed it
        records it, unless `always` (an opt-out made for it is recorded even when the case
        went meanwhile). Whether this call removed it."""
        answer = self._run(
            "settle", kept.source, kept.raw, outcome, json.dumps(record, default=str),
            "1" if always else "0", REVIEWED_KEEP,
        )  # fmt: skip
        return bool(int(answer))

    def reviewed(self, source: str, limit: int = 100) -> list[dict[str, Any]]:
        """How cases of `source` were settled, newest first."""
        raw = cast(list[Any], self.redis.lrange(self.key("reviewed", source), 0, limit - 1))
        return [decode(entry) for entry in raw]

    def count(self, group: str, name: str) -> None:
        self.redis.hincrby(self.key("counts", group), name, 1)

    def counts_of(self, group: str) -> dict[str, int]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("counts", group)))
        return {text(k): int(v) for k, v in raw.items()}

    def hand_over_counts(self, counts: dict[str, int]) -> None:
        """Add a process's metric counts for the API's /metrics to take (metrics.HandOver)."""
        pipe = self.redis.pipeline(transaction=False)
        for field, count in counts.items():
            pipe.hincrby(self.key("metrics", "handed"), field, count)
        pipe.execute()

    def take_handed_counts(self) -> dict[str, int]:
        """The counts handed over since the last take, and none left: one taker gets each."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.key("metrics", "handed"))
        pipe.delete(self.key("metrics", "handed"))
        raw, _ = pipe.execute()
        return {text(k): int(v) for k, v in raw.items()}
