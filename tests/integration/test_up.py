"""`optout up` on a fresh data dir: embedded Redis, API, worker and beat in one command."""

from __future__ import annotations

import os
import signal
import socket
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


SUMMARY = """optout up
  API          http://127.0.0.1:{port} (docs: /docs)
  Redis        embedded {redis} (AOF always, data in ./var)
  providers    voicenter (targets: voicenter)
  archive      SQLite ./var/archive.sqlite3
  admin token  ./var/admin-token (set OPTOUT_ADMIN_TOKEN to choose)
  logs         ./var/logs/optout.log (optout --verbose up: here too)
Ctrl-C to stop
"""


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

        # A second `optout up` on the same data dir: refused, before it starts a second Redis
        # on the same append-only file; the running one is still found by the ops commands.
        redis_url = (tmp_path / "var" / "redis" / "redis.url").read_text()
        second = start_up(tmp_path, fake_url, free_port())
        assert second.wait(timeout=60) == 2
        said = (tmp_path / "up.log").read_text()
        assert "an `optout up` already runs with the data dir ./var (pid " in said, said
        assert (tmp_path / "var" / "redis" / "redis.url").read_text() == redis_url
        assert healthy(url)
    finally:
        code = stop(process)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    said = (tmp_path / "up.log").read_text()
    assert "  providers    voicenter (targets: voicenter)\n" in said, said
    assert (tmp_path / "var" / "redis" / "optout.aof").exists() or any(
        (tmp_path / "var" / "redis").rglob("optout.aof*")
    )

    process = start_up(tmp_path, fake_url, port)
    try:
        wait_for(lambda: healthy(url), timeout=60, what="optout up ready again")
        view = httpx.get(url + "/v1/numbers/+972501234567", headers=auth).json()
        assert view["state"] == "blocked"
        assert view["providers"]["voicenter"]["confirmed"] == "blocked:1"
        # The accept and Voicenter's answer: archived by the worker, read back merged.
        assert view["archive"] == "ok"
        assert [e["action"] for e in view["audit"]] == ["add", "add"]
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
        # The worker too (readyz answers before it is): its stop is what is checked.
        parts_log = tmp_path / "var" / "logs" / "optout.log"
        wait_for(lambda: " ready." in parts_log.read_text(), timeout=60, what="worker ready")
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
    # The terminal: the summary, then the stop, and nothing else (no banner, no log line).
    assert log == SUMMARY.format(port=port, redis=redis_url) + "stopping ...\nstopped\n", log
    # The parts' output is in the log file, the stop included.
    parts = parts_log.read_text()
    for line in ("[queues]", '"logger":"celery.apps.worker"', "Warm shutdown", '"part_started"'):
        assert line in parts, parts[-3000:]
    stop_lines = parts[parts.rindex("Warm shutdown") :]
    for sign in ("Connection to broker lost", "Error", "refused", "Traceback"):
        assert sign not in stop_lines, stop_lines[-3000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()


def test_a_part_that_keeps_failing_is_shown_with_its_last_lines(
    tmp_path: Path, fake_voicenter_server: tuple[FakeVoicenter, str]
) -> None:
    _, fake_url = fake_voicenter_server
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_up(tmp_path, fake_url, port)
        try:
            code = process.wait(timeout=90)
        finally:
            if process.poll() is None:
                stop(process)
    said = (tmp_path / "up.log").read_text()
    assert code == 1, said
    notes = [line for line in said.splitlines() if line.startswith("api exited")]
    assert len(notes) == 6, said
    assert notes[0] == (
        "api exited with 3 (restarting it); its last lines on stderr "
        "(all in ./var/logs/optout.log):"
    )
    assert notes[-1].startswith("api exited with 3 (the sixth time in a minute: stopping)")
    bind = f"('127.0.0.1', {port}): address already in use"
    assert (
        f"  error uvicorn.error: [Errno 98] error while attempting to bind on address {bind}\n"
        in said
    )
    assert said.endswith("stopping ...\nstopped\n"), said
