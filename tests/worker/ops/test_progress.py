"""A scan's progress in a worker's log: a line at each stage's start, then every N pages."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from worker.ops.progress import LogEvery


def test_progress_is_logged_at_each_stage_and_every_n_pages_not_every_page() -> None:
    progress = LogEvery(structlog.get_logger("test"), "scan_progress", pages=3, target="t")
    with capture_logs() as logs:
        for page in range(1, 8):
            progress("ledger", page * 2000, 14_000)
        progress("listing t", 1000, None)
    assert [(e["stage"], e["done"], e["percent"]) for e in logs] == [
        ("ledger", 2000, 14), ("ledger", 8000, 57), ("ledger", 14000, 100),
        ("listing t", 1000, None),
    ]  # fmt: skip
    assert {e["event"] for e in logs} == {"scan_progress"}
    assert all(e["target"] == "t" and e["total"] in (14_000, None) for e in logs)
