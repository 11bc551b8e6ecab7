"""What every command shares: run where no `optout up` runs and REDIS_URL is unset, each says
the same thing (where it looked, how to point it at a deployment); progress shows on a
terminal's stderr only."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from config import load_settings
from worker.cli import common
from worker.cli.main import app
from worker.runtime import wiring
from worker.runtime.embedded import redis_url_missing

runner = CliRunner()

NEEDS_REDIS = [
    ["status", "0501234567"], ["sla"], ["dlq", "list"], ["export"], ["provider", "list"],
    ["provider", "test", "voicenter"], ["provider", "resume", "voicenter"], ["reconcile"],
    ["consume", "--url", "redis://127.0.0.1:1/0", "--queue", "q"],
    ["api"], ["worker"], ["beat"],
]  # fmt: skip


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with no `optout up`, and an environment that names no Redis."""
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "OPTOUT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(wiring, "_settings", None)
    monkeypatch.setattr(wiring, "_context", None)
    return tmp_path


@pytest.mark.parametrize("command", NEEDS_REDIS, ids=" ".join)
def test_without_redis_every_command_says_where_it_looked_and_exits_2(
    nowhere: Path, command: list[str]
) -> None:
    result = runner.invoke(app, command)

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == redis_url_missing(load_settings())
    assert str(nowhere / "var" / "redis" / "redis.url") in result.stderr


def test_healthcheck_without_redis_is_unhealthy_and_says_why(nowhere: Path) -> None:
    result = runner.invoke(app, ["healthcheck"])

    assert result.exit_code == 1
    assert result.stderr.strip() == "unhealthy: " + redis_url_missing(load_settings())


def _terminal(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> io.StringIO:
    """stderr as an 80-column terminal; what was drawn there."""
    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, force_terminal=True, width=width))
    return screen


def _visible(drawn: str) -> list[str]:
    """The lines a terminal showed, without colours and cursor moves."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    return [line for line in re.split(r"[\r\n]", plain) if line.strip()]


def test_a_scans_bars_show_each_stage_with_its_counts_within_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = _terminal(monkeypatch)
    with common.Bars() as bars:
        bars("ledger", 4_100_000, 10_000_000)
        bars("listing phonely:agent-a", 12_000, None)  # a provider's list: no total
        bars("ledger", 10_000_042, 10_000_000)  # opt-outs arrived meanwhile
    shown = _visible(screen.getvalue())
    assert any("ledger" in line and "10,000,042/10,000,042" in line for line in shown)
    assert any("listing phonely:agent-a" in line and "12,000" in line for line in shown)
    assert all(len(line) <= 80 for line in shown), shown


def test_progress_bars_draw_nothing_where_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, width=80))  # a pipe, a file
    with common.Bars() as bars:
        bars("ledger", 10, 20)
    assert common.in_batches(["a", "b", "c"], len, "replaying", size=2) == 3
    assert screen.getvalue() == ""


def test_what_a_command_writes_to_stdout_under_a_bar_stays_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    screen = _terminal(monkeypatch)  # `optout export > list.csv` in a terminal
    with common.Bars() as bars:
        bars("blocked numbers", 1, 2)
        print("+972501234567,,1")
    assert capsys.readouterr().out == "+972501234567,,1\n"
    assert "+972501234567" not in screen.getvalue()


def test_no_bar_is_drawn_over_output_going_to_the_same_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = _terminal(monkeypatch)
    with common.Bars(show=False) as bars:
        bars("blocked numbers", 1, 2)
    assert screen.getvalue() == ""
