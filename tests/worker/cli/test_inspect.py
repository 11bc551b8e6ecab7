"""`optout check-config`: every value shown in the syntax its variable takes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import load_settings
from worker.cli.main import app

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
