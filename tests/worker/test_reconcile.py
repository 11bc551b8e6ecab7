"""Reconciliation against every listable provider: planted missing and extra numbers."""

from __future__ import annotations

import pytest

from tests.fakes.daktela import FakeDaktela
from tests.fakes.providers import preload
from tests.worker.providers.test_all_providers import World, numbers
from worker.reconcile import reconcile


@pytest.mark.parametrize("name", ["phonely", "voodoosms", "daktela"])
def test_missing_is_repushed_and_extra_reported_then_removed(name: str) -> None:
    w = World(name)
    blocked = numbers(3)
    w.add(*blocked)
    w.settle()
    target = w.pipe.providers[name].targets()[0]
    lost, extra = blocked[1][1:], "972509999999"
    if isinstance(w.fake, FakeDaktela):
        w.fake.records = {k: r for k, r in w.fake.records.items() if r["number"] != "+" + lost}
    elif name == "voodoosms":
        w.fake.listed().discard(lost)
    else:
        w.fake.listed(target.split(":", 1)[1]).discard(lost)
    preload(w.fake, target, extra)

    (report, *_) = [r for r in reconcile(w.pipe, name) if r.target == target]
    assert report.missing == ["+" + lost]
    assert report.extras == ["+" + extra]
    w.settle()
    assert lost in w.listed()[target]
    assert extra in w.listed()[target]  # reported only

    (again, *_) = [r for r in reconcile(w.pipe, name, remove_extras=True) if r.target == target]
    assert again.missing == []
    assert again.removed == 1
    assert extra not in w.listed()[target]


def test_an_expired_daktela_entry_is_not_an_extra() -> None:
    w = World("daktela")
    assert isinstance(w.fake, FakeDaktela)
    w.fake.records["old"] = {"name": "old", "number": "+972509999999", "database": "Global",
                             "description": "", "expired": "2001-01-01 00:00:00"}  # fmt: skip
    (report,) = reconcile(w.pipe, "daktela")
    assert report.extras == []
