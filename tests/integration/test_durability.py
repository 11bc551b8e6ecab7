"""Durability at the accept boundary: a 2xx survives a Redis crash; no Redis means 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from worker.ingress.api import create_api
from worker.runtime.embedded import EmbeddedRedis
from worker.runtime.wiring import build_context

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer admin-secret"}


def test_accepted_survives_kill_9_and_redis_down_is_503(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        settings = make_settings(redis_url=server.url, admin_token="admin-secret")
        ctx = build_context(settings, dispatcher=QueueDispatcher())
        api = TestClient(create_api(lambda: ctx))
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
        assert ctx.store.ledger("+972501234567")["s"] == "blocked"
        assert ctx.store.ledger("+972501234568") == {}
        assert api.post("/v1/optouts", json=body, headers=AUTH).json()["duplicate"] is True
    finally:
        server.stop()


def test_event_loop_accepts_grouped_through_a_redis_kill_and_restart(tmp_path: Path) -> None:
    """The API's group-commit path against a real Redis: every 202 survives `kill -9`,
    every accept while Redis is down is a 503, and after the restart (an empty script
    cache) accepts go on."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        settings = make_settings(redis_url=server.url, admin_token="admin-secret")
        ctx = build_context(settings, dispatcher=QueueDispatcher())
        ctx.ensure_registered()  # from here on every one-number accept is on the loop
        app = create_api(lambda: ctx)

        async def run() -> tuple[list[tuple[int, int]], ...]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:

                async def post(i: int) -> tuple[int, int]:
                    body = {"action": "add", "phones": [f"+97250{i:07d}"]}
                    response = await client.post("/v1/optouts", json=body, headers=AUTH)
                    return i, response.status_code

                async def burst(first: int, count: int) -> list[tuple[int, int]]:
                    return list(
                        await asyncio.gather(*(post(i) for i in range(first, first + count)))
                    )

                before = await burst(0, 200)
                server.kill()
                down = await burst(1000, 50)
                server.start()
                after = await burst(2000, 200)
                return before, down, after

        before, down, after = asyncio.run(run())
        assert {code for _, code in before} == {202}
        assert {code for _, code in down} == {503}
        assert {code for _, code in after} == {202}
        for i, _ in before + after:
            assert ctx.store.ledger(f"+97250{i:07d}")["s"] == "blocked"
        assert all(ctx.store.ledger(f"+97250{i:07d}") == {} for i, _ in down)
    finally:
        server.stop()
