"""A real Redis for tests of the Lua scripts (the simulation, the store's own tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import ClassVar

import redis

from worker.runtime.embedded import free_port, redis_server_binary


class RealRedis:
    """REDIS_URL when it answers, else a redis-server of the tests' own (no persistence:
    speed), started on first use: the Lua scripts run as production runs them."""

    _url: ClassVar[str | None] = None
    _process: ClassVar[subprocess.Popen[bytes] | None] = None
    _dir: ClassVar[str | None] = None

    @classmethod
    def url(cls) -> str:
        if cls._url is None:
            given = os.environ.get("REDIS_URL")
            if given and _answers(given):
                cls._url = given
            else:
                port = free_port()
                cls._dir = tempfile.mkdtemp(prefix="optout-test-redis-")
                cls._process = subprocess.Popen(
                    [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
                     "--save", "", "--appendonly", "no", "--dir", cls._dir],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                url = f"redis://127.0.0.1:{port}/0"
                deadline = time.monotonic() + 15
                while not _answers(url):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the tests' redis-server did not start")
                    time.sleep(0.05)
                cls._url = url
        return cls._url

    @classmethod
    def stop(cls) -> None:
        if cls._process is not None:
            cls._process.terminate()
            cls._process.wait(timeout=10)
            cls._process = None
            cls._url = None
        if cls._dir:
            shutil.rmtree(cls._dir, ignore_errors=True)
            cls._dir = None


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False
