"""Reconciliation: compare what each provider's list holds with what the ledger blocks, and
repair the difference through the pipeline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import structlog

from worker.domain.phones import digits, mask
from worker.ops import metrics
from worker.ops.progress import LogEvery, Progress, silent
from worker.pipeline.batching import schedule
from worker.pipeline.context import Context
from worker.providers.base import ListsNumbers
from worker.providers.errors import ProviderError
from worker.runtime.iterables import batched
from worker.state.comparison import Buckets

log = structlog.get_logger("optout.reconcile")

#: Numbers per repair script call.
REPAIR_BATCH = 500
#: Blocked numbers read from the ledger a round trip at a time, and listed numbers written
#: to the comparison at a time: what the process holds of either side.
PAGE = 2000
#: Missing and extra numbers a report names (the counts are whole).
SAMPLE = 20


@dataclass
class TargetReport:
    """One target's comparison: how many numbers were missing (pushed again) and extra, and
    the first few of each by number."""

    target: str
    listed: int = 0
    blocked: int = 0
    missing: int = 0
    extras: int = 0
    missing_sample: list[str] = field(default_factory=list)
    extras_sample: list[str] = field(default_factory=list)
    removing: int = 0  # extras staged for removal
    kept: int = 0  # extras the ledger blocked by the time they were to be removed


def _want(ctx: Context, run: str, provider: str, buckets: Buckets, progress: Progress) -> int:
    """Put the numbers the ledger blocks that this provider should hold (routes honoured)
    into the comparison, a page at a time; how many."""
    table = ctx.store.announced_routes()
    total = ctx.store.blocked_total()
    read = wanted = 0
    for page in ctx.store.blocked_pages(PAGE):
        numbers = [n for n, _, _ in page]
        owed = [
            n for n, srcs in zip(numbers, ctx.store.ledger_sources(numbers), strict=True)
            if ctx.routed_by_any(srcs, provider, table)
        ]  # fmt: skip
        ctx.store.want(run, owed, buckets)
        read += len(numbers)
        wanted += len(owed)
        progress("ledger", read, total)
    return wanted


def _has(
    ctx: Context, run: str, provider: ListsNumbers, target: str, buckets: Buckets,
    progress: Progress,
) -> int:  # fmt: skip
    """Put what the target's list holds into the comparison as the provider serves it;
    how many numbers it holds."""
    listed = read = 0
    for page in batched(provider.list_numbers(target), PAGE):
        listed += ctx.store.has(run, target, [d for d in map(digits, page) if d], buckets)
        read += len(page)
        progress(f"listing {target}", read, None)
    return listed


def _compare(
    ctx: Context, run: str, report: TargetReport, buckets: Buckets, remove_extras: bool,
    who: str, progress: Progress,
) -> None:  # fmt: skip
    """Repair what the comparison finds: missing numbers pushed again, extras (when asked)
    removed; counted, with a sample of each, in the report."""
    missing: list[str] = []
    extras: list[str] = []
    total = len(buckets)
    for done, lacking, extra in ctx.store.differences(run, report.target, buckets):
        report.missing += len(lacking)
        report.extras += len(extra)
        report.missing_sample.extend(lacking[: SAMPLE - len(report.missing_sample)])
        report.extras_sample.extend(extra[: SAMPLE - len(report.extras_sample)])
        missing.extend(lacking)
        if remove_extras:
            extras.extend(extra)
        missing = _repair_full(ctx, report, missing, "missing", who)
        extras = _repair_full(ctx, report, extras, "extra", who)
        progress(f"comparing {report.target}", done, total)
    _repair(ctx, report, missing, "missing", who)
    _repair(ctx, report, extras, "extra", who)
    report.missing_sample.sort()
    report.extras_sample.sort()


def reconcile(
    ctx: Context,
    only: str | None = None,
    remove_extras: bool = False,
    who: str = "reconcile",
    progress: Progress = silent,
) -> list[TargetReport]:
    """Push again numbers the ledger blocks but a provider lacks; report (and, when asked,
    remove) numbers a provider holds that the ledger does not block. Repairs go through the
    pipeline: staged, versioned, pushed by the workers; an extra is checked against the
    ledger again when it is staged for removal, so one blocked meanwhile stays. The ledger
    is read first, then each list; both sides are compared in Redis, a bucket of the
    blocked index at a time, so a process holds a page of either, never all of it."""
    reports = []
    for name, provider in ctx.providers.items():
        if only and name != only:
            continue
        if not isinstance(provider, ListsNumbers) or provider.capabilities.needs_call_context:
            continue
        run, buckets, targets = uuid.uuid4().hex[:12], Buckets(), provider.targets()
        try:
            wanted = _want(ctx, run, name, buckets, progress)
            for target in targets:
                report = TargetReport(target, blocked=wanted)
                ctx.store.keep_wanted(run, buckets)
                report.listed = _has(ctx, run, provider, target, buckets, progress)
                ctx.store.keep_wanted(run, buckets)
                _compare(ctx, run, report, buckets, remove_extras, who, progress)
                metrics.RECONCILED.labels(target, "missing").inc(report.missing)
                metrics.RECONCILED.labels(target, "extra").inc(report.extras)
                log.info(
                    "reconciled",
                    target=target,
                    listed=report.listed,
                    blocked=report.blocked,
                    missing=report.missing,
                    extras=report.extras,
                    removing=report.removing,
                    kept=report.kept,
                )
                reports.append(report)
        finally:
            ctx.store.drop_comparison(run, targets, buckets)
    return reports


def scheduled_reconcile(ctx: Context) -> int:
    """Beat's reconciliation (OPTOUT_RECONCILE_INTERVAL_HOURS): missing numbers are pushed
    again; extras are logged and counted, and removed only with
    OPTOUT_RECONCILE_REMOVE_EXTRAS. A provider that cannot be listed now is skipped (the
    next run tries again). Its progress is logged (`reconcile_progress`) every 50 pages.
    Answers how many differences were found."""
    found = 0
    for name in ctx.providers:
        try:
            reports = reconcile(
                ctx, name, remove_extras=ctx.settings.reconcile_remove_extras, who="schedule",
                progress=LogEvery(log, "reconcile_progress", provider=name),
            )  # fmt: skip
        except ProviderError as exc:
            log.warning("reconcile_skipped", provider=name, reason=exc.reason)
            continue
        for report in reports:
            found += report.missing + report.extras
            if report.extras:
                log.warning(
                    "reconcile_extras",
                    target=report.target,
                    count=report.extras,
                    sample=[mask(n) for n in report.extras_sample[:5]],
                    removing=report.removing,
                )
    return found


def _repair_full(
    ctx: Context, report: TargetReport, numbers: list[str], mode: str, who: str
) -> list[str]:
    """Repair whole batches of `numbers`; what is left for the next."""
    whole = len(numbers) - len(numbers) % REPAIR_BATCH
    _repair(ctx, report, numbers[:whole], mode, who)
    return numbers[whole:]


def _repair(ctx: Context, report: TargetReport, numbers: list[str], mode: str, who: str) -> None:
    for start in range(0, len(numbers), REPAIR_BATCH):
        repaired = ctx.store.repair(report.target, numbers[start : start + REPAIR_BATCH], mode, who)
        schedule(ctx, repaired.staged)
        if mode == "extra":
            report.removing += repaired.numbers
            report.kept += repaired.kept
