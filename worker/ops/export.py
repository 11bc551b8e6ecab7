"""The blocked list as CSV (`phone,expires_at_ms,updated_ms`), streamed a page at a time, for
`GET /v1/export` and `optout export`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from worker.ops.progress import Progress, silent
from worker.pipeline.context import Context

HEADER = ("phone", "expires_at_ms", "updated_ms")


def blocked_csv(ctx: Context, page: int = 1000, progress: Progress = silent) -> Iterator[str]:
    """The CSV text, one chunk a page of the ledger's blocked numbers (header first): a
    page is all a process holds, at ten million numbers as at ten. `progress`: the numbers
    written of the blocked index's count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    total = ctx.store.blocked_total()
    done = 0
    for rows in ctx.store.blocked_pages(page):
        for phone, expires, updated in rows:
            writer.writerow([phone, expires or "", updated or ""])
        done += len(rows)
        progress("blocked numbers", done, total)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()
