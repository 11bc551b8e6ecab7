"""The blocked list as CSV (`phone,expires_at_ms,updated_ms`), streamed a page at a time, for
`GET /v1/export` and `optout export`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from worker.pipeline.context import Context

HEADER = ("phone", "expires_at_ms", "updated_ms")


def blocked_csv(ctx: Context, page: int = 1000) -> Iterator[str]:
    """The CSV text, one chunk a page of the ledger's blocked numbers (header first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for rows in ctx.store.blocked_pages(page):
        for phone, expires, updated in rows:
            writer.writerow([phone, expires or "", updated or ""])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()
