"""A number's audit history, newest first and paged: the archive and the entries Redis still
holds (its tail, not yet archived), merged by entry id so none shows twice."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.archive.database import ArchivedEntry, ArchiveError, Key
from worker.domain.errors import OptoutError
from worker.state.auditlog import seq_of, time_of

if TYPE_CHECKING:
    from worker.pipeline.context import Context
    from worker.state.store import Store


class CursorError(OptoutError, reason="bad_cursor"):
    """A `before` that is neither a page's `audit_next` nor an ISO 8601 time."""


@dataclass(frozen=True)
class Page:
    """Entries newest first; `next_before`: what to pass as `before` for the older ones
    (None: there are none); `archive`: "ok", or why older entries may be missing."""

    entries: list[ArchivedEntry]
    next_before: str | None
    archive: str


def cursor(entry: ArchivedEntry) -> str:
    """Where a page ended, as `before` takes it: `{at ms}:{entry id}`."""
    return f"{entry.at}:{entry.entry_id}"


def parse_before(text: str) -> Key:
    """The key (at, seq, entry id) of a page's cursor, or of an ISO 8601 time (entries
    before it)."""
    at, sep, entry_id = text.partition(":")
    if sep and at.isdigit() and (not entry_id or entry_id[0].isdigit()):
        return int(at), seq_of(entry_id) if entry_id else 0, entry_id
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CursorError(
            f"before: {text!r} is neither a page's audit_next nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000), 0, ""


def tail(store: Store, number: str) -> list[ArchivedEntry]:
    """The entries Redis holds for a number (not yet archived), newest first."""
    out = []
    for raw in store.audit(number):
        entry_id = str(raw.pop("id", "") or "")
        seq = seq_of(entry_id) if entry_id else 0
        out.append(ArchivedEntry(entry_id, number, time_of(raw, seq), seq, raw))
    return out


def history(ctx: Context, number: str, limit: int, before: str | None = None) -> Page:
    """A page of a number's history. With the archive unreachable, the Redis tail alone
    (`archive` says why)."""
    bound = parse_before(before) if before else None
    recent = [e for e in tail(ctx.store, number) if bound is None or e.key < bound]
    status = "ok"
    archived: list[ArchivedEntry] = []
    try:
        if ctx.archive.ready():
            archived = ctx.archive.page(number, limit + 1, bound)
        else:
            status = "not migrated yet (optout archive migrate)"
    except ArchiveError as exc:
        status = exc.message
    seen = {e.entry_id for e in recent if e.entry_id}
    merged = recent + [e for e in archived if e.entry_id not in seen]
    merged.sort(key=lambda e: e.key, reverse=True)
    page = merged[:limit]
    more = len(merged) > limit
    return Page(page, cursor(page[-1]) if more and page else None, status)
