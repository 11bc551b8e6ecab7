"""Review cases in Redis: kept newest first under a cap that says what it pushes out, read
oldest first under stable ids, settled and recorded once (lua/settle.lua)."""

from __future__ import annotations

import re

from tests.conftest import FakeClock
from worker.state.store import Store


def test_cases_read_oldest_first_under_ids_a_shell_takes_as_they_are(
    store: Store, clock: FakeClock
) -> None:
    for call in ("a", "b", "c"):
        store.keep_for_review("voicenter", {"reason": "internal_call", "cdr": {"id": call}})
        clock.advance(1)
    cases = store.kept_reviews("voicenter")
    assert [c.entry["cdr"]["id"] for c in cases] == ["a", "b", "c"]
    assert all(re.fullmatch(r"voicenter-[0-9a-f]{12}", c.id) for c in cases)
    assert len({c.id for c in cases}) == 3
    assert [c.id for c in store.kept_reviews("voicenter")] == [c.id for c in cases]
    assert store.review_sources() == {"voicenter"}
    assert store.reviews_waiting(["voicenter", "other"]) == {"voicenter": 3, "other": 0}


def test_the_cap_answers_and_counts_what_it_pushes_out(store: Store, clock: FakeClock) -> None:
    for call in ("a", "b", "c"):
        assert store.keep_for_review("voicenter", {"cdr": {"id": call}}, keep=3) == []
        clock.advance(1)
    (pushed_out,) = store.keep_for_review("voicenter", {"cdr": {"id": "d"}}, keep=3)
    assert pushed_out["cdr"] == {"id": "a"}
    assert [c.entry["cdr"]["id"] for c in store.kept_reviews("voicenter")] == ["b", "c", "d"]
    assert store.counts_of("review:voicenter") == {"overflowed": 1}


def test_a_case_is_settled_and_recorded_once(store: Store, clock: FakeClock) -> None:
    store.keep_for_review("voicenter", {"cdr": {"id": "a"}})
    (case,) = store.kept_reviews("voicenter")
    assert store.settle_review(case, "dropped", {"id": case.id, "by": "cli:dana"})
    assert not store.settle_review(case, "dropped", {"id": case.id, "by": "cli:omer"})
    assert store.kept_reviews("voicenter") == []
    (record,) = store.reviewed("voicenter")
    assert record == {"id": case.id, "by": "cli:dana", "outcome": "dropped",
                      "at": int(clock.now * 1000)}  # fmt: skip
    assert store.counts_of("review:voicenter") == {"dropped": 1}


def test_an_opt_out_made_for_a_case_gone_meanwhile_is_still_recorded(store: Store) -> None:
    store.keep_for_review("voicenter", {"cdr": {"id": "a"}})
    (case,) = store.kept_reviews("voicenter")
    store.settle_review(case, "dropped", {"by": "cli:omer"})
    assert not store.settle_review(case, "accepted", {"by": "cli:dana"}, always=True)
    assert [r["outcome"] for r in store.reviewed("voicenter")] == ["accepted", "dropped"]
    assert store.counts_of("review:voicenter") == {"dropped": 1, "accepted": 1}


def test_of_two_identical_copies_settling_takes_one(store: Store) -> None:
    # Same text, same id (kept within the same millisecond): each settle takes one copy.
    for _ in range(2):
        store.keep_for_review("voicenter", {"cdr": {"id": "a"}})
    first, second = store.kept_reviews("voicenter")
    assert first.id == second.id
    assert store.settle_review(first, "dropped", {})
    assert [c.id for c in store.kept_reviews("voicenter")] == [first.id]
