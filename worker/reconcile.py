"""Reconciliation: compare what each provider's list holds with what the ledger blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.phones import digits
from worker.pipeline import Pipeline, schedule
from worker.providers.base import Action, ListsNumbers, PushItem


@dataclass
class TargetReport:
    """One target's comparison: what was missing (re-pushed) and what was extra."""

    target: str
    listed: int = 0
    blocked: int = 0
    missing: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    removed: int = 0


def _ledger_blocked(pipe: Pipeline, provider: str) -> set[str]:
    """E.164 numbers the ledger blocks that this provider should hold (routes honoured)."""
    out: set[str] = set()
    for page in pipe.store.blocked_pages(2000):
        numbers = [n for n, _, _ in page]
        for n, src in zip(numbers, pipe.store.ledger_sources(numbers), strict=True):
            if provider in pipe.settings.routed(src, [provider]):
                out.add(n)
    return out


def reconcile(
    pipe: Pipeline, only: str | None = None, remove_extras: bool = False
) -> list[TargetReport]:
    """Re-push numbers the ledger blocks but a provider lacks; report (and, when asked,
    remove) numbers a provider holds that the ledger does not block."""
    reports = []
    for name, provider in pipe.providers.items():
        if only and name != only:
            continue
        if not isinstance(provider, ListsNumbers) or provider.capabilities.needs_call_context:
            continue
        wanted = _ledger_blocked(pipe, name)
        by_digits = {digits(n): n for n in wanted}
        for target in provider.targets():
            listed = {digits(x) for x in provider.list_numbers(target) if digits(x)}
            report = TargetReport(target, listed=len(listed), blocked=len(wanted))
            report.missing = sorted(by_digits[d] for d in by_digits.keys() - listed)
            report.extras = sorted("+" + d for d in listed - by_digits.keys())
            for start in range(0, len(report.missing), 1000):
                _, staged = pipe.store.stage_many(
                    target, report.missing[start : start + 1000], force=True
                )
                schedule(pipe, staged)
            if remove_extras and report.extras:
                report.removed = _remove(pipe, target, report.extras)
            reports.append(report)
    return reports


def _remove(pipe: Pipeline, target: str, extras: list[str]) -> int:
    """Take extras off a provider's list directly: the ledger has no block for them."""
    removed = 0
    adapter = pipe.providers[pipe.targets()[target]]
    size = adapter.capabilities.max_batch
    for start in range(0, len(extras), size):
        items = [PushItem(n) for n in extras[start : start + size]]
        results = adapter.push(target, Action.REMOVE, items)
        removed += sum(1 for r in results.values() if r.outcome.value == "done")
    return removed
