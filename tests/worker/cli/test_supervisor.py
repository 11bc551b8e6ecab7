"""What `optout up` shows of a part that exited: its last lines, readable."""

from __future__ import annotations

from worker.cli.supervisor import readable


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
