"""The benchmark still runs end to end (tiny sizes; figures printed, never asserted)."""

from __future__ import annotations

import pytest

from tests.perf.bench import main

pytestmark = pytest.mark.integration


def test_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--numbers", "300", "--baseline-numbers", "100", "--provider-numbers", "20",
            "--latency", "0", "--seconds", "1", "--rate", "100", "--backlog", "100"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "baseline: task + request per number (-c 2): 100" in out
    assert "bulk: /v1/optouts, 1,000 per request: 300" in out
    assert "bulk: optout import (CSV): 300" in out
    assert "events: /v1/optouts, 1 per request: 300" in out
    assert "events: Voicenter CDR webhook: 300" in out
    for provider in ("voicenter", "phonely", "voodoosms", "weya", "daktela"):
        assert f"provider {provider} alone" in out
    assert "same server's no-op endpoint (1 API process, 16 connections" in out
    assert "same server's no-op endpoint (2 API processes, 64 connections" in out
    assert "propagation at 100 CDRs/s" in out
    assert "optout worker (worker groups): p50" in out
    assert "one pool for every queue (before): p50" in out
    assert "baseline again at the end: " in out
    assert "    events: Voicenter CDR webhook: " in out
