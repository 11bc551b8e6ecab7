"""The log file `optout up` and the CLI write: whole lines, size-capped, rotated."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import structlog

from worker.runtime.logs import LogFile, configure


def test_a_full_file_rotates_and_the_oldest_is_dropped(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "logs" / "optout.log", max_bytes=100, backups=2)
    for n in range(10):
        log.write(f"{n:02d} " + "x" * 36 + "\n")  # 40 bytes: two lines a file
    log.close()
    files = {p.name: p.read_text().split() for p in (tmp_path / "logs").iterdir()}
    assert set(files) == {"optout.log", "optout.log.1", "optout.log.2"}
    assert [line[:2] for line in files["optout.log"][::2]] == ["08", "09"]
    assert [line[:2] for line in files["optout.log.1"][::2]] == ["06", "07"]
    assert [line[:2] for line in files["optout.log.2"][::2]] == ["04", "05"]
    assert all(p.stat().st_size <= 100 for p in (tmp_path / "logs").iterdir())


def test_a_writer_follows_a_rotation_made_by_another(tmp_path: Path) -> None:
    path = tmp_path / "cli.log"
    first, second = LogFile(path, max_bytes=50), LogFile(path, max_bytes=50)
    first.write("a" * 30 + "\n")
    first.write("b" * 30 + "\n")  # rotates: a's line is now in cli.log.1
    second.write("c\n")  # still holding the old file: writes to the new one
    assert path.read_text() == "b" * 30 + "\nc\n"
    assert (tmp_path / "cli.log.1").read_text() == "a" * 30 + "\n"


def test_lines_configured_to_a_file_are_json_and_never_reach_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = LogFile(tmp_path / "cli.log")
    configure("auto", sink=log)
    structlog.get_logger("optout.t").info("accepted", phone="+972501234567")
    logging.getLogger("celery.x").warning("call %s failed", "+972501234567")
    lines = [json.loads(line) for line in (tmp_path / "cli.log").read_text().splitlines()]
    assert [(r["logger"], r["event"]) for r in lines] == [
        ("optout.t", "accepted"),
        ("celery.x", "call +97250***4567 failed"),
    ]
    assert lines[0]["phone"] == "+97250***4567"
    assert capsys.readouterr().err == ""


def test_echo_writes_each_line_there_too(tmp_path: Path) -> None:
    echoed = (tmp_path / "echo").open("w")
    log = LogFile(tmp_path / "optout.log", echo=echoed)
    log.write("one\n")
    echoed.close()
    assert (tmp_path / "echo").read_text() == (tmp_path / "optout.log").read_text() == "one\n"
