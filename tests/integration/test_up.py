"""`optout up` on a fresh data dir: embedded Redis, API, worker and beat in one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.voicenter import FakeVoicenter
from tests.integration.conftest import ROOT, wait_for
from worker.runtime.embedded import free_port

pytestmark = pytest.mark.integration


def start_up(
    tmp_path: Path, fake_url: str, port: int, own_group: bool = False
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTOUT_", "VOICENTER_"))}
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        {
            "OPTOUT_DATA_DIR": str(tmp_path / "var"),
            "VOICENTER_API_CODE": "good-code",
            "VOICENTER_BASE_URL": fake_url,
            "OPTOUT_BATCH_LINGER_MS": "200",
            "PYTHONPATH": str(ROOT),
        }
    )
    log = (tmp_path / "up.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=own_group,
    )


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=45)


def test_up_accepts_pushes_and_keeps_state_across_restart(
    tmp_path: Path, fake_voicenter_server: tuple[FakeVoicenter, str]
) -> None:
    fake, fake_url = fake_voicenter_server
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_up(tmp_path, fake_url, port)
    try:
        wait_for(lambda: healthy(url), timeout=60, what="optout up ready")
        token = (tmp_path / "var" / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        response = httpx.post(
            url + "/v1/optouts", json={"action": "add", "phones": ["0501234567"]}, headers=auth
        )
        assert response.status_code == 202, response.text
        wait_for(lambda: "972501234567" in fake.blacklist, timeout=30, what="pushed to Voicenter")
    finally:
        code = stop(process)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert "providers: voicenter\n" in (tmp_path / "up.log").read_text()
    assert (tmp_path / "var" / "redis" / "optout.aof").exists() or any(
        (tmp_path / "var" / "redis").rglob("optout.aof*")
    )

    process = start_up(tmp_path, fake_url, port)
    try:
        wait_for(lambda: healthy(url), timeout=60, what="optout up ready again")
        view = httpx.get(url + "/v1/numbers/+972501234567", headers=auth).json()
        assert view["state"] == "blocked"
        assert view["providers"]["voicenter"]["confirmed"] == "blocked:1"
    finally:
        assert stop(process) == 0


def test_ctrl_c_stops_the_parts_before_redis_without_an_error(
    tmp_path: Path, fake_voicenter_server: tuple[FakeVoicenter, str]
) -> None:
    # A terminal's Ctrl-C reaches the whole foreground process group, not `optout up` only.
    _, fake_url = fake_voicenter_server
    port = free_port()
    process = start_up(tmp_path, fake_url, port, own_group=True)
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=60, what="optout up ready")
        redis_url = (tmp_path / "var" / "redis" / "redis.url").read_text().strip()
    finally:
        os.killpg(process.pid, signal.SIGINT)
    import redis

    # Redis outlives the processes that still need it while they stop.
    time.sleep(0.3)
    assert redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    code = process.wait(timeout=45)
    log = (tmp_path / "up.log").read_text()
    assert code == 0, log[-3000:]
    tail = log[log.index("stopping ...") :]
    for sign in ("Connection to broker lost", "Error", "refused", "Traceback"):
        assert sign not in tail, tail[-3000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
