"""The production-shape benchmark still runs end to end (2,000 numbers, wrk 1 s; figures
printed, never asserted)."""

from __future__ import annotations

import shutil

import pytest

from tests.perf.servers import AUTO, chosen, describe
from tests.perf.shape import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("wrk") is None,
        reason="wrk is not on PATH (Debian: apt-get install wrk; .ci/run installs it as root)",
    ),
]


def test_shape_runs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--numbers", "2000", "--seconds", "1", "--connections", "16",
            "--baseline-numbers", "200", "--rounds", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "optout api --workers 2, optout worker (2 processes), optout beat" in out
    assert "bulk: 1,000 a request, 4 in flight    2,000" in out
    for row in ("baseline (start)", "baseline (end)", "events (round ", "events: end to end",
                "no-op: wrk GET /healthz, 2xx", "accepts: events 2xx / no-op, median"):  # fmt: skip
        assert any(line.startswith(row) for line in lines), row
    # Both rounds listed, each with wrk's connections per API process (two, 16 in all).
    listed = [line.split() for line in lines if line[:1] in "12" and "(events)" in line]
    assert [row[0] for row in listed] == ["1", "2"]
    for row in listed:
        for spread in (row[5], row[7]):
            assert sum(int(c) for c in spread.split("/")) == 16, row
    assert "≥25x" in out and "≥4x" in out and "≥0.5" in out
    words = " ".join(out.split())  # the notes wrap at 80 columns
    # It runs production's build of Redis when this machine has one, and says which (a
    # long path may be broken anywhere: compared without white space).
    assert "".join(f"{describe(chosen(AUTO))}, AOF always".split()) in "".join(out.split())
    assert "0 otherwise, 0 socket errors or timeouts" in words
