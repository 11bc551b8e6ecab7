"""The store's Redis clients: REDIS_URL as given, or the primary Sentinel names, across a
failover, for the sync, asyncio and clock clients alike."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
import redis

from config import load_settings
from tests.sentinel_cluster import SentinelCluster
from worker.runtime.celery_app import create_celery
from worker.runtime.embedded import free_port, redis_server_binary
from worker.runtime.redis_clients import (
    WritesRefusedError,
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


@pytest.mark.integration
def test_a_primary_refusing_writes_is_an_outage_not_an_error(tmp_path: Path) -> None:
    # NOREPLICAS (fewer replicas than min-replicas-to-write: right after a failover, or a
    # replica down) came back as a plain ResponseError: no client retry, a task that did not
    # retry, and a Celery worker on the Redis broker that exited on its next ack.
    port = free_port()
    server = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path), "--min-replicas-to-write", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        settings = load_settings({"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        client = redis_client(settings)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with pytest.raises(WritesRefusedError):
            client.set("k", "v")
        with pytest.raises(WritesRefusedError):
            client.eval("redis.call('SET', KEYS[1], 'v')", 1, "k")
        assert client.get("k") is None  # reads still answer

        async def on_the_loop() -> None:
            async_client = async_redis_client(settings)
            try:
                await async_client.set("k", "v")
            finally:
                await async_client.aclose()

        with pytest.raises(WritesRefusedError):
            asyncio.run(on_the_loop())

        # The broker's connections read it so too: kombu reconnects instead of giving up.
        app = create_celery(settings)
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            with pytest.raises(connection.connection_errors):
                channel.client.lpush("q", "message")
    finally:
        server.terminate()
        server.wait(timeout=10)
