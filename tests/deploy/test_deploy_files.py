"""Static checks of deploy/: files parse, name only commands the CLI has and variables the
settings define, and the systemd units verify."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
import typer
import yaml
from celery import Celery

from config.settings import load_settings, variables
from tests.real_redis import RealRedis
from worker.cli.main import app
from worker.runtime.celery_app import create_celery
from worker.runtime.embedded import free_port, redis_server_binary
from worker.runtime.redis_clients import primary, redis_client

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "optout-worker"
#: Variables read outside Settings: the image's health probe and prometheus_client.
EXTRA_ENV = {"OPTOUT_HEALTH_URL", "PROMETHEUS_MULTIPROC_DIR"}


def settings_env() -> set[str]:
    return variables()


def cli_commands() -> set[str]:
    return set(typer.main.get_group(app).commands)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_file_keys(path: Path) -> set[str]:
    keys = set()
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keys.add(line.split("=", 1)[0])
    return keys


def test_the_env_example_lists_every_setting_and_nothing_else() -> None:
    keys = env_file_keys(DEPLOY / "optout.env.example")
    assert keys == settings_env()


def test_compose_uses_only_cli_commands_and_known_variables() -> None:
    (compose,) = load_all(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"redis", "api", "worker", "beat", "flower"} <= set(services)
    assert "redis.conf" in " ".join(services["redis"]["command"]) + str(
        services["redis"]["volumes"]
    )
    for name, service in services.items():
        if service.get("image", "").startswith(IMAGE):
            assert service["command"][0] in cli_commands(), name
            assert set(service.get("environment", {})) <= settings_env() | EXTRA_ENV, name
            assert service["env_file"] == "optout.env.example"
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "deploy" not in services["worker"]  # scaled with --scale worker=N


def test_redis_conf_is_durable() -> None:
    conf = (DEPLOY / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M)
    assert re.search(r"^appendfsync always$", conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.M)


def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(load_all(path))
    return docs


def test_kubernetes_objects_are_complete() -> None:
    docs = k8s()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "optout-api"), ("Deployment", "optout-worker"),
            ("Deployment", "optout-beat"), ("Service", "optout-api"),
            ("ConfigMap", "optout-config"), ("Secret", "optout-secrets"),
            ("HorizontalPodAutoscaler", "optout-worker"),
            ("PodDisruptionBudget", "optout-worker")} <= kinds  # fmt: skip
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    beat = deployments["optout-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    api = deployments["optout-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for name, d in deployments.items():
        for container in d["spec"]["template"]["spec"]["containers"]:
            assert container["image"].startswith(IMAGE)
            assert container["args"][0] in cli_commands(), name
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_variables_are_settings() -> None:
    for d in k8s():
        if d["kind"] == "ConfigMap":
            assert set(d["data"]) <= settings_env() | EXTRA_ENV
        if d["kind"] == "Secret":
            assert set(d["stringData"]) <= settings_env()


def test_kubernetes_commented_variables_are_settings() -> None:
    # The alternatives left as comments (e.g. Sentinel instead of REDIS_URL) name real settings.
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        named = set(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]+):", path.read_text(), re.M))
        assert named <= settings_env() | EXTRA_ENV, path.name
    configmap = (DEPLOY / "k8s" / "configmap.yaml").read_text()
    assert "# OPTOUT_REDIS_SENTINELS:" in configmap
    assert "# OPTOUT_REDIS_SENTINEL_MASTER:" in configmap


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^USER 10001$", text, re.M)
    assert "HEALTHCHECK" in text and "optout healthcheck" in text
    assert re.search(r'^ENTRYPOINT \["optout"\]$', text, re.M)
    assert "healthcheck" in cli_commands()


def test_systemd_units_verify(tmp_path: Path) -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"optout-api.service", "optout-worker.service",
                                        "optout-beat.service"}  # fmt: skip
    for unit in units:
        text = unit.read_text()
        assert "Restart=always" in text
        command = re.search(r"^ExecStart=\S+/optout (\w+)", text, re.M)
        assert command and command.group(1) in cli_commands(), unit.name
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    optout = Path(sys.executable).with_name("optout")
    env = tmp_path / "optout.env"
    env.write_text("")
    copies = []
    for unit in units:
        # Point the unit at this venv's optout and a local env file so verify can resolve them.
        text = unit.read_text().replace("/opt/optout/venv/bin/optout", str(optout))
        copy = tmp_path / unit.name
        copy.write_text(text.replace("/etc/optout/optout.env", str(env)))
        copies.append(str(copy))
    result = subprocess.run(
        [analyze, "verify", *copies], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr


# The sentinel setup: compose.yaml's "sentinel" profile plus compose.sentinel.yaml.

SENTINEL_PROFILE = {"redis-replica-1", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3"}
SEED = "/usr/local/etc/redis/sentinel/seed.sh"


def compose_services(*files: str) -> dict[str, dict[str, Any]]:
    """The services of these compose files as `docker compose -f ... -f ...` merges them (the
    rules this project's files need: mappings merge, command, entrypoint and healthcheck's test
    are replaced, volumes merge by their path in the container)."""
    services: dict[str, dict[str, Any]] = {}
    for name in files:
        (doc,) = load_all(DEPLOY / name)
        for service, spec in doc["services"].items():
            services[service] = _merged(services.get(service, {}), spec)
    return services


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == "depends_on" and isinstance(value, list):
            value = {name: {"condition": "service_started"} for name in value}  # noqa: PLW2901
        if key in {"environment", "depends_on", "healthcheck"}:
            out[key] = {**base.get(key, {}), **value}
        elif key == "volumes":
            by_target = {v.split(":")[1]: v for v in [*base.get(key, []), *value]}
            out[key] = list(by_target.values())
        else:
            out[key] = value
    return out


def app_environment(service: dict[str, Any]) -> dict[str, str]:
    """What an app container's environment holds: its env_file, then `environment:`."""
    env = {}
    for raw in (DEPLOY / service["env_file"]).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env | {k: str(v) for k, v in service.get("environment", {}).items()}


def host_path(service: dict[str, Any], path: str) -> Path:
    """The file of deploy/ that a service's bind mount puts at `path` in its container."""
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./") and (path == target or path.startswith(target + "/")):
            return DEPLOY / source[2:] / path[len(target) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted from deploy/")


def _conf_lines(service: dict[str, Any], path: str) -> list[list[str]]:
    lines = []
    for raw in host_path(service, path).read_text().splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "include":
            lines += _conf_lines(service, words[1])
        else:
            lines.append(words)
    return lines


def redis_config(service: dict[str, Any]) -> dict[str, str]:
    """The configuration a compose Redis node or Sentinel starts with: its config file (for one
    seed.sh starts, SEED_TEMPLATE and then SEED_LINES), includes resolved, then command-line
    options; the last of a directive wins (`sentinel x` directives are keyed by both words)."""
    command = service["command"]
    assert command[0] == "redis-server"
    if service.get("entrypoint") == ["sh", SEED]:
        env = service["environment"]
        lines = _conf_lines(service, env["SEED_TEMPLATE"])
        lines += [line.split() for line in env["SEED_LINES"].splitlines() if line.strip()]
    else:
        lines = _conf_lines(service, command[1])
    for option in " ".join(command[2:]).split("--")[1:]:
        if len(option.split()) > 1:  # --sentinel is a mode, not a directive
            lines.append(option.split())
    config = {}
    for words in lines:
        key = " ".join(words[:2]) if words[0] == "sentinel" else words[0]
        config[key] = " ".join(words[len(key.split()) :])
    return config


def _runs_redis(service: dict[str, Any]) -> bool:
    return service.get("command", [""])[0] == "redis-server"


def _is_sentinel(service: dict[str, Any]) -> bool:
    return _runs_redis(service) and "--sentinel" in service["command"]


def test_the_sentinel_profile_is_opt_in() -> None:
    services = compose_services("compose.yaml")
    profiled = {name: s["profiles"] for name, s in services.items() if "profiles" in s}
    assert profiled == {"flower": ["flower"]} | {name: ["sentinel"] for name in SENTINEL_PROFILE}
    # Without the profile and the override: the one Redis at REDIS_URL, as before.
    for name in ("api", "worker", "beat"):
        env = app_environment(services[name])
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert not env["OPTOUT_REDIS_SENTINELS"], name
        settings = load_settings(env)
        assert settings.redis_url == "redis://redis:6379/0" and not settings.redis_sentinels


def test_sentinels_run_redis_server_on_their_own_copy_of_sentinel_conf() -> None:
    services = compose_services("compose.yaml", "compose.sentinel.yaml")
    sentinels = {n: s for n, s in services.items() if _is_sentinel(s)}
    assert set(sentinels) == {"sentinel-1", "sentinel-2", "sentinel-3"}
    data_volumes = set()
    for name, service in sentinels.items():
        assert service["image"].startswith("redis:"), name
        assert service["entrypoint"] == ["sh", SEED], name
        assert host_path(service, SEED) == DEPLOY / "sentinel" / "seed.sh"
        assert service["command"] == ["redis-server", "/data/sentinel.conf", "--sentinel"]
        template = host_path(service, service["environment"]["SEED_TEMPLATE"])
        assert template == DEPLOY / "sentinel" / "sentinel.conf", name
        # Its own writable /data (Sentinel rewrites its config), shared with no one.
        (data,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/data"]
        assert not data.startswith(".") and data not in data_volumes, name
        data_volumes.add(data)
        config = redis_config(service)
        assert config["sentinel resolve-hostnames"] == "yes", name
        assert config["sentinel announce-hostnames"] == "yes", name
        assert config["sentinel announce-ip"] == name
        master, host, port, quorum = config["sentinel monitor"].split()
        assert (master, host, port) == ("optout", "redis", "6379")
        # Quorum 2 of 3: one Sentinel lost is survived, and one alone never decides.
        assert int(quorum) == 2 and len(sentinels) == 3
        assert config["sentinel down-after-milliseconds"] == "optout 5000"
        assert config["sentinel failover-timeout"] == "optout 60000"
        assert config["sentinel parallel-syncs"] == "optout 1"


def test_every_redis_node_is_durable_and_needs_a_replica_to_write() -> None:
    services = compose_services("compose.yaml", "compose.sentinel.yaml")
    nodes = {n: s for n, s in services.items() if _runs_redis(s) and not _is_sentinel(s)}
    assert set(nodes) == {"redis", "redis-replica-1", "redis-replica-2"}
    data_volumes = set()
    for name, service in nodes.items():
        assert service["entrypoint"] == ["sh", SEED], name  # any may be demoted: its own config
        assert service["command"] == ["redis-server", "/data/redis.conf"], name
        (data,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/data"]
        assert not data.startswith(".") and data not in data_volumes, name
        data_volumes.add(data)
        config = redis_config(service)
        assert config["appendonly"] == "yes", name
        assert config["appendfsync"] == "always", name
        assert config["maxmemory-policy"] == "noeviction", name
        # Cut off from every replica, a primary takes no writes (WAIT covers only the API's).
        assert config["min-replicas-to-write"] == "1", name
        assert config["min-replicas-max-lag"] == "10", name
        assert config["replica-announce-ip"] == name  # how the Sentinels reach it
        assert config.get("replicaof") == (None if name == "redis" else "redis 6379"), name


def test_compose_redis_and_sentinels_accept_the_other_containers() -> None:
    # redis.conf's protected-mode yes, with no password, admits only loopback clients.
    for files in (("compose.yaml",), ("compose.yaml", "compose.sentinel.yaml")):
        for name, service in compose_services(*files).items():
            if _runs_redis(service):
                config = redis_config(service)
                assert config["protected-mode"] == "no" or "requirepass" in config, (files, name)


def test_the_sentinel_override_puts_the_app_on_the_sentinels() -> None:
    (override,) = load_all(DEPLOY / "compose.sentinel.yaml")
    assert set(override["services"]) <= set(compose_services("compose.yaml"))  # no typos
    services = compose_services("compose.yaml", "compose.sentinel.yaml")
    sentinel_port = redis_config(services["sentinel-1"])["port"]
    master = redis_config(services["sentinel-1"])["sentinel monitor"].split()[0]
    apps = {n: s for n, s in services.items() if s.get("image", "").startswith(IMAGE)}
    assert set(apps) == {"api", "worker", "beat"}
    for name, service in apps.items():
        assert set(service["environment"]) <= settings_env() | EXTRA_ENV, name
        env = app_environment(service)
        assert not (env["REDIS_URL"] and env["OPTOUT_REDIS_SENTINELS"]), name
        sentinels = env["OPTOUT_REDIS_SENTINELS"].split(",")
        assert sentinels == [f"sentinel-{i}:{sentinel_port}" for i in (1, 2, 3)], name
        assert env["OPTOUT_REDIS_SENTINEL_MASTER"] == master, name
        assert env["OPTOUT_REDIS_WAIT_REPLICAS"] == "1", name
        # Started after every node and Sentinel: and refused without --profile sentinel.
        for needed in SENTINEL_PROFILE | {"redis"}:
            assert service["depends_on"][needed] == {"condition": "service_healthy"}, name
        settings = load_settings(env)
        assert settings.redis_url is None and settings.redis_sentinel_master == "optout"
        assert settings.sentinel_addresses == [(f"sentinel-{i}", 26379) for i in (1, 2, 3)]
        assert settings.broker_url.startswith("sentinel://sentinel-1:26379/0;")
        assert settings.redis_wait_replicas == 1


FLOWER_CONFIG = "/etc/flower/flower_celeryconfig.py"


def _flower_conf(env: dict[str, str]) -> dict[str, Any]:
    """Celery's settings as Flower's container reads flower_celeryconfig.py with `env`."""
    with mock.patch.dict(os.environ, env, clear=True):
        return runpy.run_path(str(DEPLOY / "flower" / "flower_celeryconfig.py"))


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.sentinel.yaml")])
def test_flower_reads_the_broker_the_workers_read(files: tuple[str, ...]) -> None:
    services = compose_services(*files)
    flower = services["flower"]
    assert flower["command"][:2] == ["celery", "--config=flower_celeryconfig"]
    assert host_path(flower, FLOWER_CONFIG) == DEPLOY / "flower" / "flower_celeryconfig.py"
    assert flower["environment"]["PYTHONPATH"] == str(Path(FLOWER_CONFIG).parent)
    conf = _flower_conf({k: str(v) for k, v in flower["environment"].items()})
    ours = create_celery(load_settings(app_environment(services["worker"]))).conf

    def hosts(url: str) -> list[str]:
        return [part.removesuffix("/0") for part in url.split(";")]

    assert hosts(conf["broker_url"]) == hosts(ours.broker_url)
    options = conf["broker_transport_options"]
    assert options["global_keyprefix"] == ours.broker_transport_options["global_keyprefix"]
    assert options.get("master_name") == ours.broker_transport_options.get("master_name")
    if len(files) > 1:
        assert options["master_name"] == "optout"
        for needed in SENTINEL_PROFILE:
            assert flower["depends_on"][needed] == {"condition": "service_healthy"}


def test_flower_sees_the_queues_the_app_fills() -> None:
    prefix = f"test-flower-{os.getpid()}:"
    url = RealRedis.url()
    settings = load_settings({"REDIS_URL": url, "OPTOUT_KEY_PREFIX": prefix})
    ours = create_celery(settings)
    conf = _flower_conf({"CELERY_BROKER_URL": url, "OPTOUT_KEY_PREFIX": prefix})
    flower = Celery("flower")
    flower.conf.update(broker_url=conf["broker_url"],
                       broker_transport_options=conf["broker_transport_options"])  # fmt: skip
    queue = ours.conf.task_default_queue
    try:
        ours.send_task("test.flower", queue=queue)
        with flower.connection() as connection:
            assert connection.default_channel._size(queue) == 1
    finally:
        ours.close()
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(match=prefix + "*"):
                client.delete(key)


def _entrypoint_stub(tmp_path: Path, script: str) -> dict[str, str]:
    """PATH with a docker-entrypoint.sh (the redis image's runs its arguments) doing `script`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker-entrypoint.sh"
    stub.write_text(f"#!/bin/sh\n{script}\n")
    stub.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _seed(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    seed = str(DEPLOY / "sentinel" / "seed.sh")
    return subprocess.run(["sh", seed, *args], env=env, capture_output=True, text=True,
                          check=False, timeout=30)  # fmt: skip


def test_seed_writes_a_config_once_and_then_hands_over(tmp_path: Path) -> None:
    template = tmp_path / "template.conf"
    template.write_text("port 26379\n")
    config = tmp_path / "sentinel.conf"
    env = _entrypoint_stub(tmp_path, 'echo "$@"')
    env |= {"SEED_TEMPLATE": str(template), "SEED_LINES": "sentinel announce-ip sentinel-1"}

    first = _seed(env, "redis-server", str(config), "--sentinel")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"redis-server {config} --sentinel\n"  # the command, unchanged
    assert config.read_text() == "port 26379\nsentinel announce-ip sentinel-1\n"
    config.write_text("port 26379\nsentinel myid abc\n")  # as the Sentinel rewrites it
    assert _seed(env, "redis-server", str(config), "--sentinel").returncode == 0
    assert config.read_text() == "port 26379\nsentinel myid abc\n"  # kept across restarts
    usage = _seed(env, "redis-cli", "ping")
    assert usage.returncode == 64 and "usage" in usage.stderr


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _until(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_sentinel_setup_runs(tmp_path: Path) -> None:
    """The profile's own files on a real redis-server (on this host's ports, by the name
    localhost): a primary and a replica seeded from sentinel/redis-node.conf, a Sentinel from
    sentinel/sentinel.conf, and the app's settings finding and writing to the primary."""
    server = shutil.which("redis-server") or redis_server_binary()
    env = _entrypoint_stub(tmp_path, f'shift; exec {server} "$@"')
    include = "include /usr/local/etc/redis/redis.conf"
    node = (DEPLOY / "sentinel" / "redis-node.conf").read_text()
    assert include in node
    (tmp_path / "node.conf").write_text(node.replace(include, f"include {DEPLOY / 'redis.conf'}"))
    monitor = "sentinel monitor optout redis 6379 2"
    sentinel = (DEPLOY / "sentinel" / "sentinel.conf").read_text()
    assert monitor in sentinel
    ports = {name: free_port() for name in ("primary", "replica", "sentinel")}
    (tmp_path / "sentinel.conf").write_text(
        sentinel.replace(monitor, f"sentinel monitor optout localhost {ports['primary']} 2")
    )
    seeded = {
        # Synced without diskless sync's 5 s wait for more replicas.
        "primary": ("node.conf", ["replica-announce-ip localhost", "repl-diskless-sync-delay 0"]),
        "replica": ("node.conf", ["replica-announce-ip localhost",
                                  f"replicaof localhost {ports['primary']}"]),
        "sentinel": ("sentinel.conf", ["sentinel announce-ip localhost"]),
    }  # fmt: skip
    primary_client = redis.Redis(port=ports["primary"], socket_timeout=2)
    processes = []
    try:
        for name, (template, lines) in seeded.items():
            data = tmp_path / name
            data.mkdir()
            lines = [*lines, f"port {ports[name]}", f"dir {data}", "bind 127.0.0.1"]  # noqa: PLW2901
            config = data / ("sentinel.conf" if name == "sentinel" else "redis.conf")
            command = ["redis-server", str(config), *(["--sentinel"] if name == "sentinel" else [])]
            seed = {"SEED_TEMPLATE": str(tmp_path / template), "SEED_LINES": "\n".join(lines)}
            processes.append(subprocess.Popen(
                ["sh", str(DEPLOY / "sentinel" / "seed.sh"), *command], env=env | seed,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            if name == "primary":
                _until(lambda: _answers(primary_client), "the primary")
                # Durable, and no writes until a replica is linked.
                assert primary_client.config_get("appendfsync") == {"appendfsync": "always"}
                with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
                    primary_client.set("optout:seed-test", "1")

        def linked() -> bool:
            info = primary_client.info("replication")
            return info.get("connected_slaves") == 1 and info["slave0"]["state"] == "online"

        _until(linked, "the replica")
        sentinel_client = redis.Redis(port=ports["sentinel"], socket_timeout=2)
        _until(lambda: _answers(sentinel_client), "the Sentinel")
        master = sentinel_client.sentinel_master("optout")
        assert (master["quorum"], master["down-after-milliseconds"]) == (2, 5000)
        assert (master["failover-timeout"], master["parallel-syncs"]) == (60000, 1)

        settings = load_settings({"OPTOUT_REDIS_SENTINELS": f"localhost:{ports['sentinel']}",
                                  "OPTOUT_REDIS_SENTINEL_MASTER": "optout"})  # fmt: skip
        client = redis_client(settings)
        assert primary(client) == f"localhost:{ports['primary']}"
        client.set("optout:test", "1")
        assert client.wait(1, 5000) == 1
    finally:
        for process in processes:
            process.kill()  # SIGTERM waits for replicas, and a replica's first AOF rewrite
            process.wait(timeout=10)
