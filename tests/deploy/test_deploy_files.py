"""Static checks of deploy/: files parse, name only commands the CLI has and variables the
settings define, and the systemd units verify."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from config.settings import variables
from worker.cli.main import app

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


def test_compose_redis_accepts_the_other_containers() -> None:
    # redis.conf's protected-mode yes, with no password, admits only loopback clients: the
    # api, worker and beat containers would get DENIED.
    (compose,) = load_all(DEPLOY / "compose.yaml")
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--protected-mode no" in command or "--requirepass" in command


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
