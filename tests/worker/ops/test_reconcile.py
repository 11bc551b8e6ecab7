"""Reconciliation against every listable provider: planted missing and extra numbers."""

from __future__ import annotations

import pytest

from tests.fakes.daktela import FakeDaktela
from tests.fakes.providers import preload
from tests.worker.providers.test_all_providers import World, numbers
from worker.ops.reconcile import reconcile


@pytest.mark.parametrize("name", ["phonely", "voodoosms", "daktela"])
def test_missing_is_repushed_and_extra_reported_then_removed(name: str) -> None:
    w = World(name)
    blocked = numbers(3)
    w.add(*blocked)
    w.settle()
    target = w.ctx.providers[name].targets()[0]
    lost, extra = blocked[1][1:], "972509999999"
    if isinstance(w.fake, FakeDaktela):
        w.fake.records = {k: r for k, r in w.fake.records.items() if r["number"] != "+" + lost}
    elif name == "voodoosms":
        w.fake.listed().discard(lost)
    else:
        w.fake.listed(target.split(":", 1)[1]).discard(lost)
    preload(w.fake, target, extra)

    (report, *_) = [r for r in reconcile(w.ctx, name) if r.target == target]
    assert report.missing == ["+" + lost]
    assert report.extras == ["+" + extra]
    w.settle()
    assert lost in w.listed()[target]
    assert extra in w.listed()[target]  # reported only

    (again, *_) = [r for r in reconcile(w.ctx, name, remove_extras=True) if r.target == target]
    assert again.missing == []
    assert again.removing == 1  # staged, versioned, pushed by the workers
    w.settle()
    assert extra not in w.listed()[target]
    assert w.ctx.store.ledger("+" + extra)["s"] == "unblocked"
    assert w.ctx.store.audit("+" + extra)[-1]["act"] == "reconcile"


def test_an_expired_daktela_entry_is_not_an_extra() -> None:
    w = World("daktela")
    assert isinstance(w.fake, FakeDaktela)
    w.fake.records["old"] = {"name": "old", "number": "+972509999999", "database": "Global",
                             "description": "", "expired": "2001-01-01 00:00:00"}  # fmt: skip
    (report,) = reconcile(w.ctx, "daktela")
    assert report.extras == []


def test_an_extra_blocked_while_reconcile_runs_is_never_removed() -> None:
    # Issue 13, item 3: the ledger is read, then the provider listed; an opt-out lands in
    # between. Its number is on the list by then: an extra by the stale reading.
    w = World("phonely")
    target = "phonely:agent-a"
    n = "+972509999999"
    fake_list = w.fake.listed("agent-a")
    original = w.fake.serve

    def serve(method: str, path: str, query: dict[str, list[str]], body: object) -> object:
        answer = original(method, path, query, body)
        if method == "GET":
            fake_list.add(n[1:])  # pushed by another worker a moment ago
            w.add(n)  # and the ledger takes the opt-out now, after the provider's list
        return answer

    w.fake.serve = serve  # type: ignore[assignment,method-assign]
    fake_list.add(n[1:])
    (report, *_) = [r for r in reconcile(w.ctx, "phonely", remove_extras=True)
                    if r.target == target]  # fmt: skip
    assert report.extras == [n]
    assert report.kept == 1 and report.removing == 0
    w.fake.serve = original  # type: ignore[method-assign]
    w.settle()
    assert n[1:] in w.fake.listed("agent-a")
    assert w.ctx.store.ledger(n)["s"] == "blocked"


def test_the_scheduled_run_repushes_missing_and_only_reports_extras_unless_told() -> None:
    from structlog.testing import capture_logs

    from worker.ops.reconcile import scheduled_reconcile

    w = World("phonely")
    blocked = numbers(2)
    w.add(*blocked)
    w.settle()
    w.fake.listed("agent-a").discard(blocked[0][1:])
    w.fake.listed("agent-b").add("972509999999")
    with capture_logs() as logs:
        assert scheduled_reconcile(w.ctx) == 2
    w.settle()
    assert blocked[0][1:] in w.fake.listed("agent-a")
    assert "972509999999" in w.fake.listed("agent-b")  # reported, not removed
    (extras,) = [e for e in logs if e["event"] == "reconcile_extras"]
    assert extras["target"] == "phonely:agent-b" and extras["count"] == 1
    assert "972509999999" not in str(extras)  # masked

    w.ctx = w.build(reconcile_remove_extras=True)
    scheduled_reconcile(w.ctx)
    w.settle()
    assert "972509999999" not in w.fake.listed("agent-b")
