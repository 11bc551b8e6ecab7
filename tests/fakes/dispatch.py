"""A dispatcher that queues pipeline work in memory and runs it when told (unit tests)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from worker.pipeline import batching as work
from worker.pipeline import push as pushing
from worker.pipeline.context import Context
from worker.providers.base import Action


@dataclass
class QueueDispatcher:
    tasks: deque[tuple[str, tuple[Any, ...]]] = field(default_factory=deque)
    sent: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def flush(self, target: str, action: Action, mode: str, delay: float = 0.0) -> None:
        self._send("flush", (target, action, mode, delay))

    def push(self, chunk_id: str, provider: str) -> None:
        self._send("push", (chunk_id, provider))

    def _send(self, kind: str, args: tuple[Any, ...]) -> None:
        self.tasks.append((kind, args))
        self.sent.append((kind, args))

    def drain(self, ctx: Context, limit: int = 10_000) -> int:
        """Run queued work (and what it queues) until none is left; delays are ignored."""
        ran = 0
        while self.tasks and ran < limit:
            kind, args = self.tasks.popleft()
            if kind == "flush":
                work.flush(ctx, args[0], args[1], args[2])
            else:
                pushing.push(ctx, args[0])
            ran += 1
        return ran
