"""What `optout up` shows of a part that exited: its last lines, readable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from worker.cli.supervisor import claim, readable


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
