"""The benchmark script still runs end to end (tiny sizes; figures printed, never asserted)."""

from __future__ import annotations

import pytest

from tests.perf.bench import main

pytestmark = pytest.mark.integration


def test_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--numbers", "300", "--baseline-numbers", "100"]) == 0
    out = capsys.readouterr().out
    assert "baseline (task + request per number): 100" in out
    assert "bulk (1,000 per request): 300" in out
    assert "events (1 per request): 300" in out
