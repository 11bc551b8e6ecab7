"""Process supervision for `optout up` and `optout worker`: children, signals, stopping."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer


def supervise_groups(
    groups: list[str], concurrency: int | None, beat: bool, metrics_port: int | None
) -> None:
    """Run each worker group as a child process; SIGTERM or Ctrl-C stops them (warm
    shutdown); when one exits, the other is stopped and its exit code is ours, for the
    supervisor above (`optout up`, systemd, Kubernetes) to restart."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name in groups:
        argv = [sys.executable, "-m", "worker.cli.main", "worker", "--group", name]
        if name == groups[0]:
            argv += [*(["--concurrency", str(concurrency)] if concurrency else []),
                     *(["--beat"] if beat else []),
                     *(["--metrics-port", str(metrics_port)] if metrics_port else [])]  # fmt: skip
        children[name] = subprocess.Popen(argv, preexec_fn=die_with_parent)  # noqa: S603, PLW1509
    stop = StopSignal()
    code = 0
    while not stop.requested:
        exited = [c for c in children.values() if c.poll() is not None]
        if exited:
            code = exited[0].returncode or 1
            break
        time.sleep(0.2)
    stop_children(children.values(), timeout=60)
    raise typer.Exit(code)


class StopSignal:
    """Set by SIGINT (Ctrl-C) or SIGTERM: a supervisor runs its children until then."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._request)
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_: Any) -> None:
        self.requested = True


def stop_children(children: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every child still running (a warm shutdown for Celery and uvicorn), wait up
    to `timeout` seconds for all of them, then kill what is left."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in running:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def die_with_parent() -> None:
    # Linux: a worker group never outlives its supervisor (kill -9 of `optout worker`).
    import contextlib
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def local_admin_token(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token
