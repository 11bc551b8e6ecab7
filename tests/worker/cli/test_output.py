"""Listings: whole values in an 80-column terminal, tab-separated in a pipe, JSON Lines."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from worker.cli import output
from worker.cli.main import app
from worker.cli.output import columns

ID = "phonely:agent-with-a-long-name:+972501234567"
ROWS = [(ID, "add", "bad_format", 3, "the provider said the number is not valid " * 3)]


def terminal(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> io.StringIO:
    screen = io.StringIO()
    fake = Console(file=screen, force_terminal=True, width=width, soft_wrap=True)
    monkeypatch.setattr(output, "console", fake)
    return screen


def test_a_terminal_table_keeps_short_values_whole_and_wraps_free_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = terminal(monkeypatch)
    rows = [("voicenter:+972501234567", "add", "bad_format", 3, "the number is not valid " * 4)]
    output.table("dead letters: 1", columns("id", "action", "reason", "attempts", "error"), rows)
    lines = _plain(screen.getvalue()).splitlines()
    assert any(
        line.split()[:4] == ["voicenter:+972501234567", "add", "bad_format", "3"]
        for line in lines
        if line.strip()
    )
    assert "…" not in screen.getvalue()
    assert all(len(line) <= 80 for line in lines)


def test_rows_too_wide_for_the_window_print_as_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = terminal(monkeypatch)
    output.table("dead letters: 1", columns("id", "action", "reason", "attempts", "error"), ROWS)
    lines = _plain(screen.getvalue()).splitlines()
    assert ID in lines
    assert "  reason    bad_format" in lines
    assert f"  error     {ROWS[0][4]}" in lines  # whole: the terminal wraps it, nothing cuts it
    assert "…" not in screen.getvalue()


def test_a_pipe_gets_a_header_and_tab_separated_rows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "console", Console(file=io.StringIO()))  # not a terminal
    output.table("dead letters: 1", columns("id", "action", "reason", "attempts", "error"),
                 [(*ROWS[0][:4], "two\tcells\nand lines")])  # fmt: skip
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "id\taction\treason\tattempts\terror",
        f"{ID}\tadd\tbad_format\t3\ttwo cells and lines",
    ]
    assert "dead letters: 1" in err  # the title is for a person, not for the rows


def test_json_lines_one_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    output.listing("t", columns("id"), [{"id": "a", "n": 1}, {"id": "b", "n": None}], True)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"id": "a", "n": 1}, {"id": "b", "n": None}]


COMMANDS = [
    ["api"], ["worker"], ["beat"], ["up"], ["consume"], ["healthcheck"], ["import"], ["scrub"],
    ["export"], ["status"], ["sla"], ["check-config"], ["reconcile"], ["dlq", "list"],
    ["dlq", "show"], ["dlq", "purge"], ["dlq", "replay"], ["provider", "list"],
    ["provider", "test"], ["provider", "resume"], ["review", "list"], ["review", "show"],
    ["review", "accept"], ["review", "drop"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_names_every_option_whole_without_type_placeholders(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, [*command, "--help"], prog_name="optout")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: optout {' '.join(command)} ")
    for placeholder in ("<str>", "<bool>", "<int>", "<float>", "<list", "<file>", "{", "…"):
        assert placeholder not in result.output, placeholder
    assert all(len(line) <= 80 for line in result.output.splitlines())


def test_consume_help_shows_its_longest_option_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, ["consume", "--help"])
    assert "--visibility-timeout SECONDS" in result.output


def _plain(text: str) -> str:
    """Terminal output without its colour codes."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_an_empty_table_says_none_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = terminal(monkeypatch)
    output.table("providers", columns("target", "confirmed"), [])
    output.table("dead letters: 0", columns("id"), [])
    output.table(None, columns("target"), [])  # the caller says why there is nothing
    assert _plain(screen.getvalue()) == "providers: none\ndead letters: 0\n"


def test_tables_one_after_another_are_split_by_a_blank_line_in_a_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "console", Console(file=io.StringIO()))  # not a terminal
    output.table("providers", columns("target", "confirmed"), [("voicenter", "blocked:1")])
    output.table("audit", columns("time", "what"), [("2026-12-03T21:52:28Z", "add")], after=True)
    assert capsys.readouterr().out.split("\n\n") == [
        "target\tconfirmed\nvoicenter\tblocked:1",
        "time\twhat\n2026-12-03T21:52:28Z\tadd\n",
    ]
