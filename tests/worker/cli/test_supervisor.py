"""What `optout up` shows of a part that exited: its last lines, readable; a part's output
read to the end whatever becomes of the log file."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.cli.supervisor import _Pump, claim, readable
from worker.runtime.logs import LogFile, Sink


def test_a_json_line_reads_as_level_logger_and_event() -> None:
    line = '{"event":"bind failed","level":"error","logger":"uvicorn.error","timestamp":"t"}'
    assert readable(line) == "error uvicorn.error: bind failed"


def test_a_traceback_shows_its_last_line() -> None:
    line = (
        '{"event":"task failed","level":"error","logger":"celery.x",'
        '"exception":"Traceback (most recent call last):\\n  ...\\nRuntimeError: boom\\n"}'
    )
    assert readable(line) == "error celery.x: task failed (RuntimeError: boom)"


def test_other_lines_are_shown_as_they_are() -> None:
    for line in ("Traceback (most recent call last):", '{"no": "event"}', "[1, 2]"):
        assert readable(line) == line


def test_one_optout_up_holds_a_data_dir_until_it_ends(tmp_path: Path) -> None:
    first = claim(tmp_path)
    assert first is not None
    assert claim(tmp_path) is None  # a second, in this process or another
    other = "from pathlib import Path; from worker.cli.supervisor import claim; "
    other += f"print(claim(Path({str(tmp_path)!r})) is None)"
    held = subprocess.run([sys.executable, "-c", other], check=True, capture_output=True, text=True)
    assert held.stdout.strip() == "True", held.stderr
    first.close()  # as when the process ends, however it ends
    again = claim(tmp_path)
    assert again is not None
    again.close()


class _Refusing:
    """A log file every write to which fails as a file the process may not write does (the
    tests run as root, for whom permission bits never refuse)."""

    def write(self, text: str, /) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "optout.log")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _refusing(_: Path) -> Sink:
    return _Refusing()


def _disk_full(_: Path) -> Sink:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    return LogFile(Path("/dev/full"))  # every write: ENOSPC, as on a full disk


def _path_now_a_folder(tmp_path: Path) -> Sink:
    path = tmp_path / "logs" / "optout.log"
    log = LogFile(path)
    path.unlink()
    path.mkdir()  # the name no longer leads to a file that can be opened for writing
    return log


@pytest.mark.parametrize("make_log", [_refusing, _disk_full, _path_now_a_folder])
def test_a_part_is_read_to_the_end_when_its_log_file_cannot_be_written(
    tmp_path: Path, make_log: Any
) -> None:
    # Far more than a pipe holds (64 KiB): a part whose output stops being read blocks on
    # a full pipe, or dies writing to a closed one (what a reader that gave up did).
    lines = 20_000
    script = (
        "import sys\n"
        f"for n in range({lines}):\n"
        "    print('out', n, 'x' * 60)\n"
        "    print('err', n, 'x' * 60, file=sys.stderr)\n"
    )
    log = make_log(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None and child.stderr is not None
    pumps = [_Pump(child.stdout, log), _Pump(child.stderr, log, keep=2)]
    try:
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()  # still blocked on a full pipe: the test failed, the child must go
    for pump in pumps:
        pump.join(timeout=10)
        assert not pump.is_alive()
    # What `optout up` says of a part that exited is still there.
    assert [line.split()[:2] for line in pumps[1].tail] == [["err", "19998"], ["err", "19999"]]
