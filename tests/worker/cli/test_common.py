"""Every command that needs Redis, run where no `optout up` runs and REDIS_URL is unset, says
the same thing: where it looked, and how to point it at a deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import load_settings
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
