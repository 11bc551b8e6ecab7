"""Evidence files: a number's audit entries, or every entry of a time range, oldest first,
as JSON Lines or CSV, from the archive and the entries still waiting in Redis."""

from __future__ import annotations

import csv
import heapq
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from worker.archive.database import ArchivedEntry, Key
from worker.ops.views import audit_entry
from worker.state.auditlog import seq_of, time_of

if TYPE_CHECKING:
    from worker.pipeline.context import Context

FORMATS = ("jsonl", "csv")
#: CSV columns: the fields most entries have, then the whole entry as JSON (kinds differ).
CSV_COLUMNS = ("id", "phone", "at", "action", "target", "source", "event_id", "result",
               "outcome", "reason", "detail", "version", "by", "entry")  # fmt: skip
#: Stream entries read per call while looking for those that match.
_STREAM_PAGE = 5000


def waiting(
    ctx: Context, number: str | None, since_ms: int | None, until_ms: int | None
) -> list[ArchivedEntry]:
    """Entries not yet archived that match, oldest first (the whole backlog is read: it is
    bounded by OPTOUT_AUDIT_BACKLOG_LIMIT, and short while the archiver keeps up)."""
    out = []
    after: str | None = None
    while True:
        batch = ctx.store.pending_audit(_STREAM_PAGE, after)
        for pending in batch:
            if number is not None and pending.number != number:
                continue
            try:
                raw = json.loads(pending.body)
            except ValueError:
                raw = {"unreadable": pending.body}
            seq = seq_of(pending.entry_id)
            at = time_of(raw, seq)
            if since_ms is not None and at < since_ms:
                continue
            if until_ms is not None and at >= until_ms:
                continue
            out.append(ArchivedEntry(pending.entry_id, pending.number, at, seq, raw))
        if len(batch) < _STREAM_PAGE:
            break
        after = batch[-1].entry_id
    out.sort(key=lambda e: e.key)
    return out


def evidence(
    ctx: Context,
    number: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The matching entries, oldest first, each once, as shown (views.audit_entry)."""
    pending = waiting(ctx, number, since_ms, until_ms)
    archived = ctx.archive.between(since_ms, until_ms, number) if ctx.archive.ready() else iter(())
    merged = heapq.merge(archived, pending, key=lambda e: e.key)
    last_key: Key | None = None
    for entry in merged:
        # An entry archived while this ran is in both, with the same key (its id is part of
        # it): side by side here.
        if entry.key == last_key:
            continue
        last_key = entry.key
        yield audit_entry(entry.entry_id, entry.number, entry.raw)


def as_jsonl(entries: Iterable[dict[str, Any]]) -> Iterator[str]:
    for entry in entries:
        yield json.dumps(entry, sort_keys=True) + "\n"


def as_csv(entries: Iterable[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow([_cell(entry.get(c)) for c in CSV_COLUMNS[:-1]]
                        + [json.dumps(entry, sort_keys=True)])  # fmt: skip
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def render(fmt: str) -> Callable[[Iterable[dict[str, Any]]], Iterator[str]]:
    return as_csv if fmt == "csv" else as_jsonl
