"""Integration fixtures: a real Redis, real Celery worker processes, loopback fake providers.

Redis: `REDIS_URL` when it is set and answers, else an embedded Redis for the session. Every
test takes its own key prefix (state and broker keys alike) and deletes only those keys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings, load_settings
from tests.fakes.server import LoopbackServer
from tests.fakes.voicenter import FakeVoicenter
from worker.pipeline.context import Context
from worker.runtime.celery_app import celery_dispatcher
from worker.runtime.embedded import EmbeddedRedis
from worker.runtime.wiring import build_context

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str | Callable[[], str] = ""
) -> Any:
    """Poll until `condition()` is truthy; fail with `what` (or what it returns, for a
    description of the state at that moment) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout}s waiting for {described or condition}")
        time.sleep(0.05)


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url and _reachable(url):
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"optout-test-{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=value + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def fake_voicenter_server() -> Iterator[tuple[FakeVoicenter, str]]:
    fake = FakeVoicenter()
    with LoopbackServer(fake.handle) as server:
        yield fake, server.url


@pytest.fixture
def env(
    redis_url: str, prefix: str, fake_voicenter_server: tuple[FakeVoicenter, str], tmp_path: Path
) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "OPTOUT_KEY_PREFIX": prefix,
        "OPTOUT_DATA_DIR": str(tmp_path / "data"),
        "VOICENTER_API_CODE": "good-code",
        "VOICENTER_BASE_URL": fake_voicenter_server[1],
        "OPTOUT_ADMIN_TOKEN": "admin-secret",
        "OPTOUT_BATCH_LINGER_MS": "300",
        "OPTOUT_SWEEP_INTERVAL_SECONDS": "0.3",
        "OPTOUT_RECOVER_INTERVAL_SECONDS": "0.5",
        "OPTOUT_LEASE_SECONDS": "4",
        "OPTOUT_RETRY_BASE_SECONDS": "0.3",
        "OPTOUT_RETRY_MAX_SECONDS": "1.5",
        "OPTOUT_HTTP_TIMEOUT_SECONDS": "2",
        "OPTOUT_LOG_FORMAT": "json",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def producer(settings: Settings) -> Context:
    """The API side's pipeline: accepts into real Redis and sends real Celery tasks."""
    return build_context(settings, dispatcher=celery_dispatcher(settings))


class WorkerProcess:
    """`optout worker --beat` as its own process group, so a test can SIGKILL all of it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        if "CELERY_BROKER_URL" not in env:
            self.env.pop("CELERY_BROKER_URL", None)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        Path(self.env["OPTOUT_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--beat", "--concurrency", "2"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        worker = WorkerProcess({**env, **overrides}, tmp_path / "worker.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
