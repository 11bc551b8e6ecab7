"""Counts of processes nothing scrapes (CLI commands) reach the API's /metrics through Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.worker.runtime.test_observability import samples, value
from worker.ingress.api import create_api
from worker.ops import metrics
from worker.pipeline.context import Context


def field(name: str, **labels: str) -> str:
    return json.dumps([name, labels], sort_keys=True)


def scrape(ctx: Context) -> dict[Any, float]:
    return samples(TestClient(create_api(lambda: ctx)).get("/metrics").text)


def test_handed_over_counts_show_once_under_the_apis_names(make_ctx: Any) -> None:
    ctx = make_ctx(admin_token="admin")
    before = scrape(ctx)
    # What an `optout import` of 1,500 numbers (two batches, four rows rejected) hands over.
    ctx.store.hand_over_counts({
        field("optout_events_total", source="import", outcome="accepted"): 2,
        field("optout_numbers_accepted_total", source="import"): 1500,
        field("optout_numbers_rejected_total", source="import", reason="contains_letters"): 4,
    })  # fmt: skip

    def delta(scraped: dict[Any, float], name: str, **labels: str) -> float:
        return value(scraped, name, **labels) - value(before, name, **labels)

    for _ in range(2):  # taken once: a second scrape (or another API process) adds nothing
        after = scrape(ctx)
        assert delta(after, "optout_events_total", source="import", outcome="accepted") == 2
        assert delta(after, "optout_numbers_accepted_total", source="import") == 1500
        assert delta(
            after, "optout_numbers_rejected_total", source="import", reason="contains_letters"
        ) == 4  # fmt: skip
    assert ctx.store.take_handed_counts() == {}


def test_a_count_this_version_does_not_know_is_dropped_not_a_failed_scrape(
    make_ctx: Any,
) -> None:
    ctx = make_ctx(admin_token="admin")
    before = scrape(ctx)
    ctx.store.hand_over_counts({
        field("optout_renamed_total", source="import"): 1,
        field("optout_events_total", queue="x"): 1,
        "not json": 1,
        field("optout_events_total", source="import", outcome="accepted"): 1,
    })  # fmt: skip
    after = scrape(ctx)
    accepted = {"source": "import", "outcome": "accepted"}
    assert value(after, "optout_events_total", **accepted) == (
        value(before, "optout_events_total", **accepted) + 1
    )


def test_a_hand_over_sends_only_what_was_counted_since_the_last(make_ctx: Any) -> None:
    ctx = make_ctx()
    metrics.EVENTS.labels("test-hand-over", "accepted").inc()  # before: not this command's
    hand_over = metrics.HandOver(ctx.store)
    metrics.EVENTS.labels("test-hand-over", "accepted").inc(2)
    metrics.ACCEPTED.labels("test-hand-over").inc(7)
    hand_over()
    hand_over()  # nothing new
    assert ctx.store.take_handed_counts() == {
        field("optout_events_total", source="test-hand-over", outcome="accepted"): 2,
        field("optout_numbers_accepted_total", source="test-hand-over"): 7,
    }
    metrics.ACCEPTED.labels("test-hand-over").inc(3)
    hand_over()
    assert ctx.store.take_handed_counts() == {
        field("optout_numbers_accepted_total", source="test-hand-over"): 3
    }


def test_a_process_in_multiprocess_mode_hands_nothing_over(
    make_ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # Its counts are in a directory the /metrics of this machine reads already.
    ctx = make_ctx()
    hand_over = metrics.HandOver(ctx.store)
    metrics.ACCEPTED.labels("test-multiprocess").inc()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    hand_over()
    assert ctx.store.take_handed_counts() == {}
