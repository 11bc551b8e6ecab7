"""Reconciliation: compare what each provider's list holds with what the ledger blocks, and
repair the difference through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from worker.domain.phones import digits, mask
from worker.ops import metrics
from worker.pipeline.batching import schedule
from worker.pipeline.context import Context
from worker.providers.base import ListsNumbers
from worker.providers.errors import ProviderError

log = structlog.get_logger("optout.reconcile")

#: Numbers per repair script call.
REPAIR_BATCH = 500


@dataclass
class TargetReport:
    """One target's comparison: what was missing (pushed again) and what was extra."""

    target: str
    listed: int = 0
    blocked: int = 0
    missing: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    removing: int = 0  # extras staged for removal
    kept: int = 0  # extras the ledger blocked by the time they were to be removed


def _ledger_blocked(ctx: Context, provider: str) -> set[str]:
    """E.164 numbers the ledger blocks that this provider should hold (routes honoured)."""
    out: set[str] = set()
    table = ctx.store.announced_routes()
    for page in ctx.store.blocked_pages(2000):
        numbers = [n for n, _, _ in page]
        for n, srcs in zip(numbers, ctx.store.ledger_sources(numbers), strict=True):
            if ctx.routed_by_any(srcs, provider, table):
                out.add(n)
    return out


def reconcile(
    ctx: Context, only: str | None = None, remove_extras: bool = False, who: str = "reconcile"
) -> list[TargetReport]:
    """Push again numbers the ledger blocks but a provider lacks; report (and, when asked,
    remove) numbers a provider holds that the ledger does not block. Repairs go through the
    pipeline: staged, versioned, pushed by the workers; an extra is checked against the
    ledger again when it is staged for removal, so one blocked meanwhile stays."""
    reports = []
    for name, provider in ctx.providers.items():
        if only and name != only:
            continue
        if not isinstance(provider, ListsNumbers) or provider.capabilities.needs_call_context:
            continue
        wanted = _ledger_blocked(ctx, name)
        by_digits = {digits(n): n for n in wanted}
        for target in provider.targets():
            listed = {digits(x) for x in provider.list_numbers(target) if digits(x)}
            report = TargetReport(target, listed=len(listed), blocked=len(wanted))
            report.missing = sorted(by_digits[d] for d in by_digits.keys() - listed)
            report.extras = sorted("+" + d for d in listed - by_digits.keys())
            _repair(ctx, target, report.missing, "missing", who)
            if remove_extras:
                report.removing, report.kept = _repair(ctx, target, report.extras, "extra", who)
            metrics.RECONCILED.labels(target, "missing").inc(len(report.missing))
            metrics.RECONCILED.labels(target, "extra").inc(len(report.extras))
            log.info(
                "reconciled",
                target=target,
                listed=report.listed,
                blocked=report.blocked,
                missing=len(report.missing),
                extras=len(report.extras),
                removing=report.removing,
                kept=report.kept,
            )
            reports.append(report)
    return reports


def scheduled_reconcile(ctx: Context) -> int:
    """Beat's reconciliation (OPTOUT_RECONCILE_INTERVAL_HOURS): missing numbers are pushed
    again; extras are logged and counted, and removed only with
    OPTOUT_RECONCILE_REMOVE_EXTRAS. A provider that cannot be listed now is skipped (the
    next run tries again). Answers how many differences were found."""
    found = 0
    for name in ctx.providers:
        try:
            reports = reconcile(
                ctx, name, remove_extras=ctx.settings.reconcile_remove_extras, who="schedule"
            )
        except ProviderError as exc:
            log.warning("reconcile_skipped", provider=name, reason=exc.reason)
            continue
        for report in reports:
            found += len(report.missing) + len(report.extras)
            if report.extras:
                log.warning(
                    "reconcile_extras",
                    target=report.target,
                    count=len(report.extras),
                    sample=[mask(n) for n in report.extras[:5]],
                    removing=report.removing,
                )
    return found


def _repair(ctx: Context, target: str, numbers: list[str], mode: str, who: str) -> tuple[int, int]:
    staged_total = kept_total = 0
    for start in range(0, len(numbers), REPAIR_BATCH):
        repaired = ctx.store.repair(target, numbers[start : start + REPAIR_BATCH], mode, who)
        schedule(ctx, repaired.staged)
        staged_total += repaired.numbers
        kept_total += repaired.kept
    return staged_total, kept_total
