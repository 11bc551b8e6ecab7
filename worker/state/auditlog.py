"""The audit stream: entries waiting for the archive, read in order and forgotten once it
has committed them; the backlog it makes; and entries of a provider rather than a number."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from worker.state.codec import text
from worker.state.keyspace import Keyspace

#: Ids per cleanup script: a long script stalls every other call (as accept's WRITE_CHUNK).
FORGET_CHUNK = 1000
#: Keys a step of the pass over audit tails looks at (SCAN COUNT), and tails per script
#: (each up to OPTOUT_AUDIT_CAP entries to move).
TAILS_PAGE = 1000
TAILS_CHUNK = 50


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An audit entry in `audit:log`: its stream id (the entry's id everywhere after), its
    number ('' for a provider's entry) and its JSON as the script wrote it."""

    entry_id: str
    number: str
    body: str


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits for the archive: entries in the stream, and the time (ms, as the entry
    says) of the oldest; 0 when none wait."""

    entries: int
    oldest_ms: int


class AuditLog(Keyspace):
    """`audit:log`, the stream every audit entry is written to (lua/prelude.lua: audit_raw)."""

    def pending_audit(self, count: int, after: str | None = None) -> list[PendingEntry]:
        """The oldest `count` entries waiting for the archive (after stream id `after`)."""
        start = f"({after}" if after else "-"
        flat = cast(list[Any], self._run("pending", start, count))
        return [
            PendingEntry(text(flat[i]), text(flat[i + 1]), text(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    def forget_archived(self, entries: Sequence[PendingEntry]) -> int:
        """Drop entries the archive has committed (as pending_audit read them) from the
        stream and their numbers' tails; how many left the stream."""
        removed = 0
        for start in range(0, len(entries), FORGET_CHUNK):
            chunk = [[e.entry_id, e.number, e.body] for e in entries[start : start + FORGET_CHUNK]]
            removed += int(self._run("archived", orjson.dumps(chunk).decode()))
        return removed

    def adopt_tails(self, count: int = TAILS_PAGE) -> int:
        """One step of a pass over the numbers' audit tails (SCAN) that gives the stream the
        entries kept there only (lua/tails.lua: the release before wrote them so, and so
        does an old process of a rolling upgrade); how many it gave. A pass that gave any is
        followed by another (an old process may have written more behind it); one that gave
        none ends it for good (`adopted:tails`)."""
        mark = self.key("adopted", "tails")
        raw = text(self.redis.get(mark) or b"0")
        if raw == "done":
            return 0
        cursor, _, found = raw.partition("+")
        next_cursor, keys = self.redis.scan(
            int(cursor), match=self.key("audit", "*"), count=count, _type="list"
        )
        skip = len(self.key("audit", ""))
        numbers = [text(k)[skip:] for k in keys]
        given = 0
        for start in range(0, len(numbers), TAILS_CHUNK):
            chunk = numbers[start : start + TAILS_CHUNK]
            given += int(self._run("tails", json.dumps(chunk)))
        found_any = bool(found) or given > 0
        if int(next_cursor) == 0:
            self.redis.set(mark, "0" if found_any else "done")
        else:
            self.redis.set(mark, f"{int(next_cursor)}{'+' if found_any else ''}")
        return given

    def audit_backlog(self) -> Backlog:
        key = self.key("audit", "log")
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(key)
        pipe.xrange(key, "-", "+", 1)
        length, first = pipe.execute()
        if not first:
            return Backlog(int(length), 0)
        raw_id, fields = first[0]
        try:
            at = int(json.loads(fields.get(b"e", b"{}")).get("at") or 0)
        except (ValueError, TypeError, AttributeError):
            at = 0
        # An entry without a time of its own: the stream id's, the server's clock.
        return Backlog(int(length), at or int(text(raw_id).split("-", 1)[0]))

    def audit_backlog_length(self) -> int:
        return int(self.redis.xlen(self.key("audit", "log")))

    def audit_provider(self, provider: str, entry: dict[str, Any], pipe: Any = None) -> None:
        """An audit entry of a provider rather than a number (a pause, a resume): to the
        archive only (through the stream), with the provider as its target. `pipe`: a
        transaction to write it in, beside the change it records."""
        body = json.dumps({"at": self.now_ms(), "prov": provider, **entry}, separators=(",", ":"))
        (pipe if pipe is not None else self.redis).xadd(
            self.key("audit", "log"), {"n": "", "e": body}
        )
