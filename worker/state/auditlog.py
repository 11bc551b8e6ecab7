"""The audit streams: entries waiting for the archive, read in order and forgotten once it
has committed them; the backlog they make; a number's entries among them; and entries of a
provider rather than a number."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog

from worker.state.codec import decode, text
from worker.state.keyspace import Keyspace

log = structlog.get_logger("optout.audit")

#: Ids per cleanup script: a long script stalls every other call (as accept's WRITE_CHUNK).
FORGET_CHUNK = 1000
#: Keys a step of the pass over audit tails looks at (SCAN COUNT), and tails per script
#: (each up to OPTOUT_AUDIT_CAP entries to move).
TAILS_PAGE = 1000
TAILS_CHUNK = 50
#: Batches (`audit:batches` entries) a drain reads a call, and a number's read looks at.
BATCH_PAGE = 100
RECENT_PAGE = 500


def seq_of(entry_id: str) -> int:
    """An entry's id as one integer in the order written: a stream id (`{ms}-{n}`) as
    ms * 1,000,000 + n; a batch's row (`{ms}-{n}.{k}`, k < 1,000: prelude.lua's
    AUDIT_BATCH_ROWS) as ms * 1,000,000 + n * 1,000 + k; either maybe with a ~suffix (an id
    the archive found taken). The two streams number their ids each on its own: an id
    breaks a tie (worker/archive/database.py: ArchivedEntry.key)."""
    ms, _, rest = entry_id.partition("-")
    n, _, k = rest.split("~", 1)[0].partition(".")
    try:
        if k:
            return int(ms) * 1_000_000 + int(n) * 1_000 + int(k)
        return int(ms) * 1_000_000 + int(n or 0)
    except ValueError:
        return 0


def time_of(raw: Any, seq: int) -> int:
    """An entry's time (ms) as the archive keeps and orders it: its own `at`, or, for one
    without (a batch kept whole as unpaired), its id's (`seq`: seq_of). Redis's readers
    (a history's tail, an export's waiting entries) take it alike, so that an entry in both
    places has one key (worker/archive/database.py: ArchivedEntry.key)."""
    at: Any = raw.get("at") if isinstance(raw, dict) else None
    try:
        return int(at) or seq // 1_000_000
    except (TypeError, ValueError):
        return seq // 1_000_000


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An audit entry waiting for the archive: its id (the entry's id everywhere after), its
    number ('' for a provider's entry) and its JSON as the script wrote it. `batch`: the
    `audit:batches` entry it is a row of, and `rows`, how many that holds ('' and 1: an
    entry of `audit:log`, one a stream entry)."""

    entry_id: str
    number: str
    body: str
    batch: str = ""
    rows: int = 1


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits for the archive: entries in the streams, and the time (ms, as the entry
    says) of the oldest; 0 when none wait."""

    entries: int
    oldest_ms: int


def _rows(batch_id: str, fields: dict[bytes, bytes]) -> list[PendingEntry]:
    """A batch's rows. Numbers and entries that do not pair up (nothing writes such a batch)
    are kept whole as one row of no number, and logged: evidence is never dropped."""
    numbers = text(fields.get(b"n", b"")).split("\n")
    entries = text(fields.get(b"e", b"")).split("\n")
    if len(numbers) != len(entries):
        log.error("audit_batch_unpaired", batch=batch_id, numbers=len(numbers),
                  entries=len(entries))  # fmt: skip
        body = json.dumps({"unpaired": {"n": numbers, "e": entries}}, separators=(",", ":"))
        return [PendingEntry(f"{batch_id}.0", "", body, batch_id, 1)]
    return [
        PendingEntry(f"{batch_id}.{k}", number, entry, batch_id, len(numbers))
        for k, (number, entry) in enumerate(zip(numbers, entries, strict=True))
    ]


class AuditLog(Keyspace):
    """The audit streams: `audit:batches` (a script call's entries, lua/prelude.lua:
    audit_flush) and `audit:log` (a provider's, and the release before's)."""

    def pending_audit(self, count: int, after: str | None = None) -> list[PendingEntry]:
        """The oldest entries waiting for the archive, about `count` (a batch is read whole:
        the drain forgets it whole), after the entry `after` (a PendingEntry's id): those of
        `audit:log` (provider entries, and every entry of an older process) first, then the
        rows of `audit:batches`. Fewer than `count`: none wait after them."""
        out: list[PendingEntry] = []
        if after is None or "." not in after:
            start = f"({after}" if after else "-"
            flat = cast(list[Any], self._run("pending", start, count))
            out = [
                PendingEntry(text(flat[i]), text(flat[i + 1]), text(flat[i + 2]))
                for i in range(0, len(flat), 3)
            ]
            after = None
        start = f"({after.split('.', 1)[0]}" if after else "-"
        key = self.key("audit", "batches")
        while len(out) < count:
            page = cast(list[tuple[bytes, dict[bytes, bytes]]],
                        self.redis.xrange(key, start, "+", BATCH_PAGE))  # fmt: skip
            for raw_id, fields in page:
                out.extend(_rows(text(raw_id), fields))
            if len(page) < BATCH_PAGE:
                break
            start = f"({text(page[-1][0])}"
        return out

    def forget_archived(self, entries: Sequence[PendingEntry]) -> int:
        """Drop entries the archive has committed (as pending_audit read them) from the
        streams (and an `audit:log` entry from its number's tail, an older process's); a
        batch only with every one of its rows. How many left."""
        removed = 0
        single = [e for e in entries if not e.batch]
        for start in range(0, len(single), FORGET_CHUNK):
            chunk = [[e.entry_id, e.number, e.body] for e in single[start : start + FORGET_CHUNK]]
            removed += int(self._run("archived", orjson.dumps(chunk).decode()))
        held: dict[str, list[int]] = {}
        for e in entries:
            if e.batch:
                held.setdefault(e.batch, [0, e.rows])[0] += 1
        whole = [[batch, rows] for batch, (seen, rows) in held.items() if seen == rows]
        for start in range(0, len(whole), FORGET_CHUNK):
            chunk_json = orjson.dumps(whole[start : start + FORGET_CHUNK]).decode()
            removed += int(self._run("batches_archived", chunk_json))
        return removed

    def audit(self, e164: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A number's entries not yet archived, newest first, each with its id as "id" (an
        older process's without one in its tail: not yet given to a stream)."""
        entries = [{"id": row_id, **decode(body)} for row_id, body in self.waiting_for(e164)]
        entries.reverse()
        tail = cast(list[Any], self.redis.lrange(self.key("audit", e164), 0, -1))
        if tail:
            # An older process's tail (lua/archived.lua): merged as the archive orders entries.
            entries = sorted([decode(e) for e in tail] + entries, key=_order, reverse=True)
        return entries if limit is None else entries[:limit]

    def waiting_for(self, e164: str) -> Iterator[tuple[str, str]]:
        """A number's entries waiting in `audit:batches`, oldest first: (row id, JSON). The
        whole stream is looked at, in pages, in Redis (lua/recent.lua): short while the
        archiver keeps up, at most OPTOUT_AUDIT_BACKLOG_LIMIT rows while it is down."""
        start = "-"
        while True:
            flat = cast(list[Any], self._run("recent", e164, start, RECENT_PAGE))
            for i in range(2, len(flat), 2):
                yield text(flat[i]), text(flat[i + 1])
            if int(flat[1]) < RECENT_PAGE:
                return
            start = f"({text(flat[0])}"

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
        """Both streams: `audit:log`'s entries and the rows `audit:batches` holds."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.key("audit", "log"))
        pipe.get(self.key("audit", "rows"))
        pipe.xrange(self.key("audit", "log"), "-", "+", 1)
        pipe.xrange(self.key("audit", "batches"), "-", "+", 1)
        length, rows, *firsts = pipe.execute()
        oldest = [_first_time(first[0]) for first in firsts if first]
        return Backlog(int(length) + int(rows or 0), min(oldest) if oldest else 0)

    def audit_backlog_length(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.key("audit", "log"))
        pipe.get(self.key("audit", "rows"))
        length, rows = pipe.execute()
        return int(length) + int(rows or 0)

    def audit_provider(self, provider: str, entry: dict[str, Any], pipe: Any = None) -> None:
        """An audit entry of a provider rather than a number (a pause, a resume): to the
        archive only (through the stream), with the provider as its target. `pipe`: a
        transaction to write it in, beside the change it records."""
        body = json.dumps({"at": self.now_ms(), "prov": provider, **entry}, separators=(",", ":"))
        (pipe if pipe is not None else self.redis).xadd(
            self.key("audit", "log"), {"n": "", "e": body}
        )


def _order(entry: dict[str, Any]) -> tuple[int, int, str]:
    """As the archive orders entries (worker/archive/database.py: ArchivedEntry.key): an
    older process's `{ms}-0` and a batch's row `{ms}-0.0` have the same time and seq."""
    entry_id = str(entry.get("id") or "")
    seq = seq_of(entry_id)
    return time_of(entry, seq), seq, entry_id


def _first_time(entry: tuple[bytes, dict[bytes, bytes]]) -> int:
    """The time of a stream entry (a batch's: its first row's), as time_of gives it."""
    raw_id, fields = entry
    first = fields.get(b"e", b"{}").split(b"\n", 1)[0]
    try:
        raw = json.loads(first)
    except ValueError:
        raw = None
    return time_of(raw, seq_of(text(raw_id)))
