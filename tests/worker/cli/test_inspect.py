"""`optout check-config`: every value shown in the syntax its variable takes; `status` shows
the deployment's targets, whatever the terminal's own settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import load_settings
from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from worker.cli.main import app
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

runner = CliRunner()
PAIRS = {
    "OPTOUT_ROUTES": "sms=voodoosms,crm=-weya,crm=-phonely",
    "OPTOUT_PROVIDER_LIMITS": "voicenter=10/4,phonely=2.5/1",
    "OPTOUT_VOICENTER_CALL_TYPES": "Queue=callerPhone|caller,Extension Outgoing=target",
    "OPTOUT_VOICENTER_OPTOUT_CUSTOMDATA": "var_optout=1",
    "OPTOUT_SOURCE_REGIONS": "uk-sms:GB",
    "DAKTELA_FIELDS": "database=db",
}


def test_each_value_shown_reads_back_as_the_same_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in PAIRS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPTOUT_WEBHOOK_TOKENS", "dnc:s3cret")
    monkeypatch.setenv("OPTOUT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPTOUT_ADMIN_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["check-config"])  # stdout a pipe: tab-separated
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header == "variable\tvalue"
    shown = dict(row.split("\t") for row in rows)
    again = load_settings({name: shown[name] for name in PAIRS})
    before = load_settings(PAIRS)
    assert again.routes == before.routes
    assert again.provider_limits == before.provider_limits
    assert again.voicenter_call_types == before.voicenter_call_types
    assert again.voicenter_optout_customdata == before.voicenter_optout_customdata
    assert again.source_regions == before.source_regions
    assert again.providers["daktela"] == before.providers["daktela"]
    assert shown["OPTOUT_WEBHOOK_TOKENS"] == "dnc:***"
    assert shown["OPTOUT_ADMIN_TOKEN"] == "- (admin API off)"
    (tmp_path / "admin-token").write_text("t\n")
    result = CliRunner().invoke(app, ["check-config"])
    assert f"- (optout up uses {tmp_path / 'admin-token'})" in result.output


def test_status_in_a_terminal_without_credentials_shows_the_deployments_targets(
    bare_cli: Context, ctx: Context, dispatcher: QueueDispatcher
) -> None:
    accept(ctx, Event("crm", Action.ADD, [PhoneInput("0501234567")]))
    dispatcher.drain(ctx)  # the worker, which has Voicenter's credentials, pushed it

    result = runner.invoke(app, ["status", "0501234567"])
    as_json = runner.invoke(app, ["status", "0501234567", "--json"])

    assert result.exit_code == 0, result.output
    header, first, *_ = result.stdout.splitlines()
    assert header.startswith("target\tconfirmed\t")
    assert first.startswith("voicenter\tblocked:1\t")
    assert json.loads(as_json.stdout)["providers"]["voicenter"]["confirmed"] == "blocked:1"


def test_sla_in_a_pipe_prints_rows_without_a_bar_and_says_when_the_limit_cut_it(
    bare_cli: Context, ctx: Context, clock: FakeClock
) -> None:
    accept(ctx, Event("api", Action.ADD, [PhoneInput("0501234567"), PhoneInput("0521234567")]))
    clock.advance(7200)  # nothing pushed them

    every = runner.invoke(app, ["sla", "--age", "1h"])
    first = runner.invoke(app, ["sla", "--age", "1h", "--limit", "1"])

    assert every.exit_code == first.exit_code == 1
    assert every.stdout.splitlines() == [
        "phone\tstate\tage\tpending",
        "+972501234567\tblocked\t2h\tvoicenter",
        "+972521234567\tblocked\t2h\tvoicenter",
    ]
    assert every.stderr == "not confirmed after 1h: 2\n"
    assert len(first.stdout.splitlines()) == 2
    assert first.stderr == "not confirmed after 1h: 1 (the first 1 found; --limit N for more)\n"
    assert not set("━─│╸╺") & set(every.output + first.output)  # no bar, no box drawing
