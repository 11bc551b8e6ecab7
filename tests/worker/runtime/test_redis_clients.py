"""The store's Redis clients: REDIS_URL as given, or the primary Sentinel names, across a
failover, for the sync, asyncio and clock clients alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from config import load_settings
from tests.sentinel_cluster import SentinelCluster
from worker.runtime.redis_clients import (
    async_redis_client,
    clock_client,
    primary,
    primary_or_reason,
    redis_client,
)


def test_without_sentinel_the_primary_is_the_url_given() -> None:
    tcp = load_settings({"REDIS_URL": "redis://cache.internal:6380/2"})
    assert primary(redis_client(tcp)) == "cache.internal:6380"
    assert primary(clock_client(tcp)) == "cache.internal:6380"
    unix = load_settings({"REDIS_URL": "unix:///run/redis.sock"})
    assert primary(redis_client(unix)) == "unix:/run/redis.sock"


def test_no_sentinel_answering_is_said_not_raised() -> None:
    settings = load_settings({"OPTOUT_REDIS_SENTINELS": "127.0.0.1:1,127.0.0.1:2",
                              "OPTOUT_REDIS_SENTINEL_MASTER": "optout"})  # fmt: skip
    client = redis_client(settings)
    assert primary_or_reason(client) == "unknown: MasterNotFoundError"
    with pytest.raises(redis.ConnectionError):  # a 503 for the API, a retry for a task
        client.ping()


@pytest.mark.integration
def test_every_client_follows_the_primary_sentinel_names(tmp_path: Path) -> None:
    with SentinelCluster(tmp_path, password="node-pw", sentinel_password="s-pw") as ha:
        settings = load_settings({
            "OPTOUT_REDIS_SENTINELS": ha.sentinel_setting,
            "OPTOUT_REDIS_SENTINEL_MASTER": ha.master_name,
            "OPTOUT_REDIS_PASSWORD": "node-pw",
            "OPTOUT_REDIS_SENTINEL_PASSWORD": "s-pw",
        })  # fmt: skip
        client, clock = redis_client(settings), clock_client(settings)
        old = ha.primary()
        assert primary(client) == f"{old[0]}:{old[1]}"
        client.set("k", "before")
        assert client.wait(2, 5000) == 2
        clock.time()

        ha.kill(ha.primary_node())
        ha.wait_failover(old, timeout=60)
        new = ha.primary()
        # The same client objects, no restart: the next connection goes to the new primary.
        assert primary(client) == f"{new[0]}:{new[1]}"
        assert client.get("k") == b"before"
        client.set("k", "after")
        assert ha.client(new).get("k") == "after"  # on that node itself (it decodes)
        assert clock.time()[0] > 0

        async def through_the_event_loop() -> bytes | None:
            async_client = async_redis_client(settings)
            try:
                await async_client.set("k", "async")
                return await async_client.get("k")
            finally:
                await async_client.aclose()

        assert asyncio.run(through_the_event_loop()) == b"async"
