"""The archiver: drains Redis's audit stream into the archive in batches (at-least-once:
committed first, then dropped from Redis; a repeat inserts nothing), one drain at a time;
and the backlog it leaves when the archive is down: an alarm, then a bound on accepts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from worker.archive.database import ArchiveError
from worker.ops import metrics
from worker.ops.views import iso

if TYPE_CHECKING:
    from worker.pipeline.context import Context

log = structlog.get_logger("optout.archive")

#: A drain holds its turn this long at most: one killed mid-drain delays the next by this.
TURN_SECONDS = 30.0
#: How long one scheduled run drains before it gives its worker back (the next run goes on).
BUDGET_SECONDS = 5.0
#: How often a process logs that the archive is down, or that the backlog is above the alarm.
COMPLAIN_EVERY = 60.0


@dataclass
class _Complaints:
    last: dict[str, float]

    def due(self, what: str) -> bool:
        now = time.monotonic()
        if now - self.last.get(what, float("-inf")) < COMPLAIN_EVERY:
            return False
        self.last[what] = now
        return True


_complaints = _Complaints({})


def archive_pending(ctx: Context, budget_seconds: float = BUDGET_SECONDS) -> int:
    """The scheduled run: drain what waits, unless another drain holds the turn (two at once
    would be harmless, only wasted: the same rows inserted twice as no-ops) or it waits for
    the pushes (`deferred`). With the archive down, nothing leaves Redis: logged (once a
    minute), retried next run."""
    try:
        if deferred(ctx):
            return 0
        token = ctx.store.take_turn("archive", TURN_SECONDS)
        if token is None:
            return 0
        try:
            return drain(ctx, budget_seconds, yielding=True)
        except ArchiveError as exc:
            if _complaints.due("down"):
                log.warning("archive_unavailable", error=exc.message,
                            archive=ctx.archive.describe())  # fmt: skip
            return 0
        finally:
            ctx.store.give_turn_back("archive", token)
    finally:
        check_alarm(ctx)


def deferred(ctx: Context) -> bool:
    """Whether the backlog is left for a later run: while numbers wait to be pushed or are
    being pushed, until its oldest entry has waited OPTOUT_ARCHIVE_DEFER_SECONDS, and never
    at half the alarm or more. A drain shares the worker's processes and cores with the
    pushes (in a bulk it held one of two pool processes for seconds while opt-outs waited),
    and an opt-out reaching its providers comes before its evidence reaching the archive,
    which loses nothing by waiting: the entries stay in Redis, where a number's history
    reads them meanwhile."""
    settings = ctx.settings
    if settings.archive_defer_seconds <= 0 or not _pushing(ctx):
        return False
    backlog = ctx.store.audit_backlog()
    # Half the alarm, so that the waiting never raises it, nor reaches the limit where
    # accepts are refused (the settings keep it at the alarm or above).
    if not backlog.entries or backlog.entries >= settings.audit_backlog_alarm / 2:
        return False
    waited = (ctx.store.now_ms() - backlog.oldest_ms) / 1000
    return waited < settings.archive_defer_seconds


def _pushing(ctx: Context) -> bool:
    return ctx.store.leased() > 0 or bool(ctx.store.staged_batches(sorted(ctx.directory())))


def drain(ctx: Context, budget_seconds: float = BUDGET_SECONDS, yielding: bool = False) -> int:
    """Move batches from the stream into the archive until it is empty or the budget is
    spent (`yielding`: or the pushes have begun meanwhile, see `deferred`); how many entries
    moved. Each batch: inserted in one transaction, then dropped from the stream and from
    its numbers' tails in Redis."""
    ctx.archive.ensure_schema()
    size = ctx.settings.archive_batch
    deadline = time.monotonic() + budget_seconds
    moved = 0
    while True:
        batch = ctx.store.pending_audit(size)
        if batch:
            ctx.archive.write(batch)
            ctx.store.forget_archived(batch)
            moved += len(batch)
            metrics.ARCHIVED.inc(len(batch))
        if time.monotonic() >= deadline:
            break
        # Caught up: entries an older release kept in numbers' tails only go to the stream
        # now, a page of tails at a time, so that they never swell the backlog accepts are
        # bounded by. Before yielding to the pushes: with accepts and pushes never pausing,
        # a drain that yielded first would never reach this step.
        if len(batch) < size and not ctx.store.adopt_tails():
            break
        if yielding and batch and deferred(ctx):
            break
    if moved:
        log.info("audit_archived", entries=moved)
    return moved


def backlog_report(ctx: Context) -> dict[str, Any]:
    """The backlog as /readyz, `optout archive status` and the metrics show it."""
    backlog = ctx.store.audit_backlog()
    lag = max(0.0, (ctx.store.now_ms() - backlog.oldest_ms) / 1000) if backlog.oldest_ms else 0.0
    settings = ctx.settings
    return {
        "entries": backlog.entries,
        "oldest_at": iso(backlog.oldest_ms),
        "lag_seconds": round(lag, 3),
        "alarm": backlog.entries > settings.audit_backlog_alarm,
        "alarm_above": settings.audit_backlog_alarm,
        "refusing_accepts": backlog.entries >= settings.audit_backlog_limit,
        "limit": settings.audit_backlog_limit,
    }


def check_alarm(ctx: Context) -> None:
    """Log an error (once a minute per process) while the backlog is above the alarm."""
    try:
        report = backlog_report(ctx)
    except Exception:  # noqa: BLE001
        return  # Redis down: the caller has failed already, and says so
    if report["alarm"] and _complaints.due("alarm"):
        log.error(
            "audit_backlog_alarm", entries=report["entries"], lag_seconds=report["lag_seconds"],
            alarm_above=report["alarm_above"], refusing_accepts_at=report["limit"],
            archive=ctx.archive.describe(),
        )  # fmt: skip


#: How long a process trusts its last look at the backlog before accept looks again.
BACKLOG_LOOK_SECONDS = 1.0


def over_limit(ctx: Context) -> int | None:
    """The backlog when it is at OPTOUT_AUDIT_BACKLOG_LIMIT (accepts are refused until it
    drains), else None. Looked at once a second per process: the bound may be passed by a
    second's accepts, never silently."""
    seen_at, entries = ctx.backlog_seen
    now = time.monotonic()
    if now - seen_at >= BACKLOG_LOOK_SECONDS:
        entries = ctx.store.audit_backlog_length()
        ctx.backlog_seen = (now, entries)
    return entries if entries >= ctx.settings.audit_backlog_limit else None
