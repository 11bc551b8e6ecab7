"""The log file `optout up` and the CLI write: whole lines, size-capped, rotated; a line it
cannot write dropped, a rotation that fails survived."""

from __future__ import annotations

import io
import json
import logging
import os
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


def test_a_line_the_disk_cannot_take_is_dropped_and_said_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    log = LogFile(Path("/dev/full"))  # every write: ENOSPC, as on a full disk
    for n in range(3):
        assert log.write(f"line {n}\n") == len(f"line {n}\n")
    assert log.dropped == 3
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1
    assert said[0].startswith("optout: cannot write the log file /dev/full (")
    assert "No space left on device" in said[0]
    log.close()


def test_writing_resumes_when_the_file_can_be_written_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "optout.log"
    echoed = io.StringIO()
    log = LogFile(path, echo=echoed)
    log.write("before\n")
    path.unlink()
    path.mkdir()  # the name no longer leads to a file that can be opened for writing
    log.write("lost 1\n")
    log.write("lost 2\n")
    assert log.dropped == 2
    path.rmdir()
    log.write("after\n")
    log.close()
    assert path.read_text() == "after\n"
    assert echoed.getvalue() == "before\nlost 1\nlost 2\nafter\n"  # the echo had them all
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_an_echo_that_is_gone_is_left_out(tmp_path: Path) -> None:
    echoed = (tmp_path / "echo").open("w")
    echoed.close()  # a terminal that went away
    log = LogFile(tmp_path / "optout.log", echo=echoed)
    log.write("one\n")
    log.close()
    assert (tmp_path / "optout.log").read_text() == "one\n"


def test_a_failed_rotation_writes_on_into_the_current_file_and_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "optout.log"
    blocker = tmp_path / "optout.log.1"
    blocker.mkdir()
    (blocker / "x").touch()  # renaming the log onto a folder fails (EISDIR)
    log = LogFile(path, max_bytes=100, backups=1)
    lines = [f"{n:02d} " + "x" * 36 + "\n" for n in range(6)]  # 40 bytes each
    for line in lines[:4]:
        log.write(line)
    assert log.failed_rotations >= 1 and log.dropped == 0
    assert path.read_text() == "".join(lines[:4])  # past the cap, nothing lost
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith(f"optout: cannot rotate the log file {path} (")

    (blocker / "x").unlink()
    blocker.rmdir()
    for line in lines[4:]:
        log.write(line)
    log.close()
    # Tried again at the next line (the file had grown past where it failed): rotated.
    assert blocker.read_text() == "".join(lines[:4])
    assert path.read_text() == "".join(lines[4:])
    assert capsys.readouterr().err == ""
