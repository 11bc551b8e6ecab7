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
    assert (report.missing, report.missing_sample) == (1, ["+" + lost])
    assert (report.extras, report.extras_sample) == (1, ["+" + extra])
    w.settle()
    assert lost in w.listed()[target]
    assert extra in w.listed()[target]  # reported only

    (again, *_) = [r for r in reconcile(w.ctx, name, remove_extras=True) if r.target == target]
    assert again.missing == 0
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
    assert report.extras == 0


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
    assert report.extras_sample == [n]
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


def _comparison_keys(w: World) -> list[bytes]:
    return list(w.redis.scan_iter(match=w.ctx.store.key("reconcile", "*")))


def test_a_list_longer_than_a_page_is_compared_a_page_at_a_time() -> None:
    from worker.ops import reconcile as module

    w = World("voodoosms")
    blocked = numbers(2500)
    for start in range(0, 2500, 500):
        w.add(*blocked[start : start + 500])
    extras = numbers(30, start=5000)
    for n in blocked[100:] + extras:  # the first 100 lost at the provider, 30 not ours
        preload(w.fake, "voodoosms", n[1:])
    held: list[int] = []
    store_has = w.ctx.store.has

    def has(run: str, target: str, digits: list[str], buckets: object) -> int:
        held.append(len(digits))
        return store_has(run, target, digits, buckets)  # type: ignore[arg-type]

    w.ctx.store.has = has  # type: ignore[method-assign]
    seen: dict[str, tuple[int, int | None]] = {}

    (report,) = reconcile(w.ctx, "voodoosms", progress=lambda *p: seen.update({p[0]: p[1:]}))

    assert (report.blocked, report.listed) == (2500, 2430)
    assert (report.missing, report.extras) == (100, 30)
    assert len(report.missing_sample) == module.SAMPLE == len(report.extras_sample)
    assert report.missing_sample == sorted(report.missing_sample)
    assert set(report.missing_sample) <= set(blocked[:100])
    assert set(report.extras_sample) <= set(extras)
    assert max(held) == module.PAGE and len(held) == 2  # the provider's 1,000 a request
    assert seen["ledger"] == (2500, 2500)
    assert seen["listing voodoosms"] == (2430, None)
    done, total = seen["comparing voodoosms"]
    assert done == total and total > 0
    assert _comparison_keys(w) == []  # nothing of the run is left in Redis
    # Every missing number, and only those, is marked unknown there: pushed again.
    marked = w.ctx.store.confirmations("voodoosms", blocked)
    assert [n for n, c in zip(blocked, marked, strict=True) if c == "?"] == blocked[:100]


def test_a_number_listed_twice_counts_once() -> None:
    w = World("voodoosms")
    blocked = numbers(3)
    w.add(*blocked)
    provider = w.ctx.providers["voodoosms"]
    twice = [n[1:] for n in blocked] + [blocked[0][1:], "", "972509999999", "972509999999"]
    provider.list_numbers = lambda target: iter(twice)  # type: ignore[attr-defined]
    (report,) = reconcile(w.ctx, "voodoosms")
    assert (report.listed, report.missing, report.extras) == (4, 0, 1)
    assert report.extras_sample == ["+972509999999"]


def test_a_listing_that_fails_halfway_repairs_nothing_and_leaves_nothing_behind() -> None:
    from worker.providers.errors import RetryableError

    w = World("voodoosms")
    blocked = numbers(1500)
    w.add(*blocked[:750])
    w.add(*blocked[750:])
    for n in blocked[:1200]:
        preload(w.fake, "voodoosms", n[1:])

    def fail_from_now_on() -> None:  # the second page never comes
        w.fake.http_status, w.fake.http_status_times = 500, -1

    w.fake.after_request = fail_from_now_on
    with pytest.raises(RetryableError):
        reconcile(w.ctx, "voodoosms", remove_extras=True)
    assert _comparison_keys(w) == []
    assert all(e["act"] != "reconcile" for n in blocked for e in w.ctx.store.audit(n))
