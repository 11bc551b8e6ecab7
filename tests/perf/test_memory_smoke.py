"""The memory benchmark still runs end to end (2,000 numbers; figures printed, not asserted)."""

from __future__ import annotations

import pytest

from tests.perf.memory import GOAL_BYTES, MAIN_FAMILIES, main, measure
from worker.pipeline.context import Context

pytestmark = pytest.mark.integration


def test_memory_report_is_well_formed_and_its_parts_add_up() -> None:
    archived: list[Context] = []
    report = measure(2000, 3, progress=None, archive=archived.append)
    assert len(archived) == 1  # 2 accept calls: the archive step ran once, before measuring
    assert report.numbers == 2000
    assert report.targets == ("voicenter", "phonely:agent-a", "phonely:agent-b")
    assert report.total > 0 and report.per_number > 0
    lines = report.lines()
    for name in MAIN_FAMILIES:  # each a row, whether it holds anything or not
        assert any(line.split()[0] == name for line in lines[2:]), name
    # One ledger hash per number (its confirmations inside), no audit key of its own (the
    # archive step here archives nothing: every entry waits in the batches' stream), the
    # blocked index in buckets; a confirmation hash per target is a thing of the past, and
    # a success keeps no last answer.
    assert report.family("num:*").keys == 2000
    assert report.family("audit:*").keys == 0
    assert report.family("audit:batches").keys == 1  # every entry, until archived
    assert report.family("audit:batches").bytes > 2000 * 4 * 100  # 4 entries a number
    assert 0 < report.family("blocked:*").keys <= 2000
    assert report.family("confirmed:*").keys == 0
    assert report.family("answer:*").keys == 0
    # What the families measure adds up to used_memory's growth, roughly: the rest is the
    # allocator's and the clients' (~0.75 MB whatever the size: a quarter of this small run).
    assert abs(report.parts - report.total) <= 0.25 * report.total + 1_000_000
    assert report.goal_ratio == pytest.approx(report.per_number / GOAL_BYTES)
    assert lines[0].startswith("Redis memory per blocked number: 2,000 numbers, 3 targets")
    assert any(line.split()[0] == "num:*" for line in lines[2:])
    assert any("projection to 10,000,000 numbers" in line for line in lines)


def test_the_command_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--numbers", "300", "--targets", "1"]) == 0
    out = capsys.readouterr().out
    assert "300 numbers, 1 target (voicenter)" in out
    assert "bytes per number" in out and "the goal (this run: 1 target)" in out


def test_with_the_archive_drained_no_audit_entry_waits_in_redis() -> None:
    report = measure(2000, 3, progress=None)  # the default step: the workers' drain
    assert report.family("audit:*").keys == 0  # no number's tail
    assert report.family("audit:batches").bytes < 1000  # the stream, emptied


def test_the_command_without_the_archive_keeps_every_entry_in_redis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--numbers", "300", "--targets", "1", "--no-archive"]) == 0
    out = capsys.readouterr().out
    assert "archive: none, every audit entry kept in Redis" in out
    stream = next(line for line in out.splitlines() if line.split()[:1] == ["audit:batches"])
    assert int(stream.split()[1]) == 1  # the batches' stream: nothing was archived
    assert int(stream.split()[2].replace(",", "")) > 300 * 2 * 100  # its bytes: 2 a number
