"""`optout import` and `scrub`: exit codes and the summary an operator (or a script) reads."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.fakes.dispatch import QueueDispatcher
from worker.cli.main import app
from worker.pipeline.context import Context

runner = CliRunner()


def test_an_import_that_accepts_nothing_exits_1_and_names_the_report(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("phone\nnot a phone\nxx\n")
    result = runner.invoke(app, ["import", str(listed)])
    assert result.exit_code == 1, result.output
    assert "rows 2: accepted 0, duplicates 0, rejected 2" in result.output
    assert "nothing accepted" in result.output
    assert (tmp_path / "list.rejected.csv").exists()


def test_a_clean_import_exits_0_and_writes_no_report(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("Phone Number;Name\n0501234567;Dana\n0501234567;Dana\n")
    result = runner.invoke(app, ["import", str(listed)])
    assert result.exit_code == 0, result.output
    assert "rows 2: accepted 1, duplicates 1, rejected 0, already" in result.output
    assert not (tmp_path / "list.rejected.csv").exists()


def test_a_missing_column_is_a_wrong_option_for_both(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("phone,name\n0501234567,Dana\n")
    for command in ("import", "scrub"):
        result = runner.invoke(app, [command, str(listed), "--column", "tel"])
        assert result.exit_code == 2, result.output
        assert "no column named 'tel'" in result.output
        assert "'phone', 'name'" in result.output
        assert "re-run" not in result.output


def test_an_empty_file_exits_1(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["import", str(empty)])
    assert result.exit_code == 1
    assert "no data rows" in result.output


def test_durations_read_as_an_operator_says_them() -> None:
    from worker.cli.common import span

    assert [span(s) for s in (1, 59.6, 90 * 60, 86400 + 3 * 3600 + 5)] == [
        "1s", "1m", "1h 30m", "1d 3h"
    ]  # fmt: skip


def test_export_writes_the_blocked_list_to_a_pipe_or_a_file(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    from worker.pipeline.accept import Event, PhoneInput, accept
    from worker.providers.base import Action

    accept(cli_ctx, Event("api", Action.ADD, [PhoneInput("0501234567"), PhoneInput("0521234567")]))
    piped = runner.invoke(app, ["export"])
    assert piped.exit_code == 0, piped.output
    lines = piped.output.splitlines()
    assert lines[0] == "phone,expires_at_ms,updated_ms"
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["+972501234567", "+972521234567"]
    saved = runner.invoke(app, ["export", "--out", str(tmp_path / "blocked.csv")])
    assert "exported 2 blocked numbers to" in saved.output
    assert (tmp_path / "blocked.csv").read_text() == piped.output


def test_an_import_prints_its_summary_and_logs_to_the_data_dir(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("phone\n0501234567\n")
    result = runner.invoke(app, ["import", str(listed)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress bar in a pipe, nor its last frame on stdout
    assert result.stdout.splitlines() == [
        "rows 1: accepted 1, duplicates 0, rejected 0, already imported batches 0"
    ]
    assert "{" not in result.stdout
    logged = (tmp_path / "var/logs/cli.log").read_text().splitlines()
    audit = [json.loads(line) for line in logged if '"event":"audit"' in line]
    assert [(n["phone"], n["ledger"]) for n in audit[0]["numbers"]] == [
        ("+97250***4567", "applied")
    ]


def test_verbose_puts_the_log_lines_on_stderr_instead(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    tmp_path: Path,
) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("phone\n0501234567\n")
    result = runner.invoke(app, ["--verbose", "import", str(listed)])
    assert result.exit_code == 0, result.output
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "audit" in events
    assert "{" not in result.stdout
    assert not (tmp_path / "var/logs/cli.log").exists()


def test_export_to_a_file_shows_its_progress_on_a_terminals_stderr(
    cli_ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.cli import common
    from worker.pipeline.accept import Event, PhoneInput, accept
    from worker.providers.base import Action

    numbers = [PhoneInput(f"05{i:08d}") for i in range(1100)]  # two pages
    accept(cli_ctx, Event("api", Action.ADD, numbers))
    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, force_terminal=True, width=80))

    saved = runner.invoke(app, ["export", "--out", str(tmp_path / "blocked.csv")])

    assert saved.exit_code == 0, saved.output
    assert saved.stdout == f"exported 1100 blocked numbers to {tmp_path / 'blocked.csv'}\n"
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "blocked numbers" in drawn and "1,100/1,100" in drawn
    assert all(len(line) <= 80 for line in re.split(r"[\r\n]", drawn))
    assert len((tmp_path / "blocked.csv").read_text().splitlines()) == 1101
