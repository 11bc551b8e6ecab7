"""A reconciliation's comparison in Redis: both sides by bucket, compared a few buckets at a
time, the target's side deleted as it is compared, and nothing left once dropped."""

from __future__ import annotations

from worker.state.comparison import Buckets
from worker.state.ledger import BLOCKED_BUCKETS, blocked_bucket
from worker.state.store import Store


def test_buckets_remember_which_were_written_in_order() -> None:
    buckets = Buckets()
    for b in (BLOCKED_BUCKETS - 1, 9, 0, 9):
        buckets.add(b)
    assert list(buckets) == [0, 9, BLOCKED_BUCKETS - 1]
    assert len(buckets) == 3


def test_differences_are_what_each_side_lacks_and_nothing_is_left(store: Store) -> None:
    owed = [f"+97250{i:07d}" for i in range(100)]  # 100 buckets: two rounds of DIFF_BUCKETS
    held = [n[1:] for n in owed[20:]] + ["972599999999", "972599999998"]
    buckets = Buckets()
    store.want("r1", owed, buckets)
    assert store.has("r1", "phonely:agent-a", held[:50], buckets) == 50
    assert store.has("r1", "phonely:agent-a", held[30:], buckets) == len(held) - 50  # repeats
    assert store.redis.ttl(store.key("reconcile", "r1", "want", str(blocked_bucket(owed[0])))) > 0

    found = list(store.differences("r1", "phonely:agent-a", buckets))

    assert found[-1][0] == len(buckets)  # every bucket written, compared
    assert len(found) == 2
    assert sorted(n for _, missing, _ in found for n in missing) == owed[:20]
    assert sorted(n for _, _, extra in found for n in extra) == ["+972599999998", "+972599999999"]
    assert not list(store.redis.scan_iter(match=store.key("reconcile", "r1", "has", "*")))
    store.drop_comparison("r1", ["phonely:agent-a"], buckets)
    assert not list(store.redis.scan_iter(match=store.key("reconcile", "*")))


def test_the_want_side_is_kept_for_a_day_from_each_renewal(store: Store) -> None:
    """Found by review: written once and compared with one slow list after another, the
    want side could expire under a run, and every later target lacked nothing."""
    buckets = Buckets()
    store.want("r2", ["+972501234567", "+972507654321"], buckets)
    keys = [store.key("reconcile", "r2", "want", str(b)) for b in buckets]
    for key in keys:
        store.redis.expire(key, 5)
    store.keep_wanted("r2", buckets)
    assert all(store.redis.ttl(key) > 3600 for key in keys)
    store.drop_comparison("r2", [], buckets)
