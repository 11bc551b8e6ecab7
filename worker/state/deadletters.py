"""Dead letters: the numbers a target gave up on, listed, counted, replayed or purged."""

from __future__ import annotations

import json
from typing import Any, cast

from worker.state.codec import decode, text
from worker.state.keyspace import Keyspace
from worker.state.records import Tally


class DeadLetters(Keyspace):
    """`dlq` (member ``{target}|{e164}`` -> JSON entry) and `dlq:age` (-> first failure)."""

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first."""
        ids = cast(list[Any], self.redis.zrange(self.key("dlq:age"), 0, -1))
        if not ids:
            return []
        raw = cast(list[Any], self.redis.hmget(self.key("dlq"), [text(i) for i in ids]))
        return [decode(entry) for entry in raw if entry is not None]

    def replay(self, ids: list[str], who: str) -> Tally:
        """Stage dead letters again (see lua/replay.lua); the count: how many."""
        return Tally.decode(self._run("replay", json.dumps(ids), who, self.audit_cap))

    def purge(self, ids: list[str], who: str) -> int:
        return int(self._run("purge", json.dumps(ids), who, self.audit_cap))

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per target."""
        out: dict[str, int] = {}
        for member in self.redis.zscan_iter(self.key("dlq:age"), count=1000):
            target = text(member[0]).split("|", 1)[0]
            out[target] = out.get(target, 0) + 1
        return out

    def oldest_dead_letter_ms(self) -> int | None:
        first = self.redis.zrange(self.key("dlq:age"), 0, 0, withscores=True)
        return int(first[0][1]) if first else None
