"""Retention: entries older than OPTOUT_AUDIT_RETENTION_DAYS leave the archive, in batches,
on a daily schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from worker.ops.views import iso

if TYPE_CHECKING:
    from worker.pipeline.context import Context

log = structlog.get_logger("optout.archive")

DAY_MS = 86_400_000
#: Rows per delete: each a short transaction, so the archiver's inserts never wait long.
PURGE_BATCH = 10_000


def purge_expired(ctx: Context, batch: int = PURGE_BATCH) -> int:
    """Delete every archived entry older than the retention period (by the store's clock);
    how many went, logged with the cutoff."""
    cutoff = ctx.store.now_ms() - ctx.settings.audit_retention_days * DAY_MS
    ctx.archive.ensure_schema()
    total = 0
    while True:
        gone = ctx.archive.delete_before(cutoff, batch)
        total += gone
        if gone < batch:
            break
    log.info("audit_retention_purged", entries=total, older_than=iso(cutoff),
             retention_days=ctx.settings.audit_retention_days)  # fmt: skip
    return total
