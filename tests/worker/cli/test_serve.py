"""What `optout up` says about the providers: each that is on with its targets, or how to
turn one on; what `optout healthcheck` says about the archive's backlog."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from tests.conftest import make_settings
from tests.real_redis import RealRedis
from tests.worker.state.scene import N1, N2, N3, accept, live
from worker.cli.main import app
from worker.cli.serve import _providers
from worker.providers.base import Action
from worker.runtime import wiring
from worker.state.store import Store


def test_each_provider_on_is_named_with_its_targets() -> None:
    settings = make_settings({
        "VOICENTER_API_CODE": "code",
        "PHONELY_API_KEY": "key", "PHONELY_UID": "uid", "PHONELY_AGENT_IDS": "a1,a2",
    })  # fmt: skip
    assert _providers(settings) == (
        "voicenter (targets: voicenter), phonely (targets: phonely:a1, phonely:a2)"
    )


def test_with_none_on_it_says_how_to_turn_one_on() -> None:
    assert _providers(make_settings({})) == (
        "none (opt-outs wait in the ledger): set e.g. VOICENTER_API_CODE"
    )


def test_healthcheck_says_so_when_the_archive_is_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTOUT_DATA_DIR", raising=False)
    monkeypatch.setattr(wiring, "_settings", None)
    url = RealRedis.url()
    prefix = f"optout-health-{uuid.uuid4().hex[:12]}:"
    for name, value in {"REDIS_URL": url, "CELERY_BROKER_URL": url, "OPTOUT_KEY_PREFIX": prefix,
                        "OPTOUT_AUDIT_BACKLOG_ALARM": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    client = redis.Redis.from_url(url)
    store = Store(client, prefix=prefix)
    try:
        store.audit_provider("voicenter", {"act": "pause"})  # audit:log: 1 entry
        live(store)
        accept(store, Action.ADD, N1)
        assert CliRunner().invoke(app, ["healthcheck"]).stderr == ""  # 2: at the alarm
        accept(store, Action.ADD, N2, N3)  # audit:batches: 3 rows
        result = CliRunner().invoke(app, ["healthcheck"])
        assert result.exit_code == 0, result.output
        assert "audit archive behind: 4 entries wait in Redis" in result.stderr
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
