"""The scans benchmark still runs end to end (2,000 numbers; figures printed, not asserted)."""

from __future__ import annotations

import pytest

from tests.perf.scans import SCANS, main, measure

pytestmark = pytest.mark.integration


def test_each_scan_goes_through_every_number_and_reports_its_memory() -> None:
    report = measure(2000, progress=None)
    assert report.numbers == 2000 and report.redis_filled > 0
    assert [s.name.split(" ")[0] for s in report.scans] == ["export", "reconcile", "catch-up"]
    for scan in report.scans:
        assert scan.numbers == 2000 and scan.steps > 0 and scan.seconds > 0
        assert scan.rss_peak >= scan.rss_start > 0
        assert scan.redis_peak >= scan.redis_start > 0
    lines = report.lines()
    assert lines[0].startswith("Scans of the ledger: 2,000 blocked numbers; Redis ")
    assert any("every number pushed after" in line for line in lines)
    assert any("missing 20 (staged again), extra 1,000" in line for line in lines)


def test_the_command_runs_the_scans_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(SCANS) == {"catch-up", "export", "reconcile"}
    assert main(["--numbers", "300", "--only", "export"]) == 0
    out = capsys.readouterr().out
    assert "300 blocked numbers" in out and "export (blocked_csv, into a file): 300" in out
    assert "catch-up" not in out
