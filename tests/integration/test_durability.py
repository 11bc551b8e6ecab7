"""Durability at the accept boundary: a 2xx survives a Redis crash; no Redis means 503."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from worker.api import create_api
from worker.embedded import EmbeddedRedis
from worker.runtime import build_pipeline

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer admin-secret"}


def test_accepted_survives_kill_9_and_redis_down_is_503(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        settings = make_settings(redis_url=server.url, admin_token="admin-secret")
        pipe = build_pipeline(settings, dispatcher=QueueDispatcher())
        api = TestClient(create_api(lambda: pipe))
        body = {"action": "add", "phones": ["+972501234567"]}
        assert api.post("/v1/optouts", json=body, headers=AUTH).status_code == 202

        server.kill()  # SIGKILL: no shutdown, no final fsync
        down = api.post(
            "/v1/optouts", json={"action": "add", "phones": ["+972501234568"]}, headers=AUTH
        )
        assert down.status_code == 503
        assert down.json()["error"] == "store_unavailable"
        assert api.get("/readyz").status_code == 503

        server.start()
        assert pipe.store.ledger("+972501234567")["s"] == "blocked"
        assert pipe.store.ledger("+972501234568") == {}
        assert api.post("/v1/optouts", json=body, headers=AUTH).json()["duplicate"] is True
    finally:
        server.stop()
