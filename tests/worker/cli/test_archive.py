"""`optout archive migrate` and `optout archive status`, and check-config's archive line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fakes.dispatch import QueueDispatcher
from worker.cli.main import app
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action


def test_migrate_creates_the_sqlite_archive_in_the_data_dir(
    _data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPTOUT_ARCHIVE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://unused.invalid:1/0")
    done = CliRunner().invoke(app, ["archive", "migrate"])
    assert done.exit_code == 0, done.output
    where = (_data_dir / "archive.sqlite3").resolve()
    assert done.output.strip() == f"SQLite {where}: schema at version 0001"
    assert CliRunner().invoke(app, ["archive", "migrate"]).exit_code == 0


def test_migrate_says_why_an_archive_is_unreachable_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://unused.invalid:1/0")
    monkeypatch.setenv("OPTOUT_ARCHIVE_URL", "postgresql://optout:s3cret@127.0.0.1:1/optout")
    done = CliRunner().invoke(app, ["archive", "migrate"])
    assert done.exit_code == 1
    assert "archive unavailable" in done.output and "s3cret" not in done.output


def test_status_shows_the_backlog_and_exits_1_above_the_alarm(
    cli_ctx: Context, dispatcher: QueueDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    accept(cli_ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))
    shown = CliRunner().invoke(app, ["archive", "status", "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout.splitlines()[0])
    assert (report["entries"], report["alarm"]) == (1, False)
    lower = cli_ctx.settings.model_copy(update={"audit_backlog_alarm": 0})
    monkeypatch.setattr(cli_ctx, "settings", lower)
    alarmed = CliRunner().invoke(app, ["archive", "status"])
    assert alarmed.exit_code == 1
    assert "audit archive behind: 1 entry waits in Redis" in alarmed.output
    assert "alarm             yes" in alarmed.stdout  # words, not a Python boolean


def test_check_config_shows_the_archive_url_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://unused.invalid:1/0")
    monkeypatch.setenv("OPTOUT_ARCHIVE_URL", "postgresql://optout:s3cret@db:5432/optout")
    shown = CliRunner().invoke(app, ["check-config", "--json"])
    rows = {r["variable"]: r["value"] for r in map(json.loads, shown.stdout.splitlines())}
    assert rows["OPTOUT_ARCHIVE_URL"] == "PostgreSQL postgresql+psycopg://optout:***@db:5432/optout"
    monkeypatch.delenv("OPTOUT_ARCHIVE_URL")
    shown = CliRunner().invoke(app, ["check-config", "--json"])
    rows = {r["variable"]: r["value"] for r in map(json.loads, shown.stdout.splitlines())}
    assert rows["OPTOUT_ARCHIVE_URL"].startswith("- (SQLite /")
