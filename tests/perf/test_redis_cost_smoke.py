"""The Redis cost benchmark still runs end to end (figures printed, not asserted)."""

from __future__ import annotations

import pytest

from tests.perf.redis_cost import STEPS, main, measure
from tests.perf.servers import AUTO, chosen, describe

pytestmark = pytest.mark.integration


def test_every_step_is_measured_and_the_whole_path_runs(capsys: pytest.CaptureFixture[str]) -> None:
    (run,) = measure(400, 50, 1)
    assert set(run.us) == set(STEPS)
    assert run.chunks == 4 and run.entries == 800  # the accept and the answer of each number
    assert main(["--numbers", "200", "--events", "20", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "200 numbers in bulk (200 an accept, 2 chunks, 400 audit entries)" in " ".join(
        out.split()
    )
    assert "bulk path, in all" in out and "2 run(s)" in out
    # The server it ran, production's build when there is one (a long path may be broken
    # anywhere: compared without white space).
    assert "".join(f"on {describe(chosen(AUTO))}, AOF off".split()) in "".join(out.split())
