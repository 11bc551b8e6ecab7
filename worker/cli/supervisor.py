"""Process supervision for `optout up` and `optout worker`: children, restarts, signals,
stopping."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.cli.common import console, err
from worker.runtime.children import die_with_parent

if TYPE_CHECKING:
    from worker.runtime.embedded import EmbeddedRedis


def supervise_groups(
    groups: list[str], concurrency: int | None, beat: bool, metrics_port: int | None
) -> int:
    """Run each worker group as a child process; SIGTERM or Ctrl-C stops them (warm
    shutdown); when one exits, the other is stopped and its exit code is returned, for the
    supervisor above (`optout up`, systemd, Kubernetes) to restart."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name in groups:
        argv = [sys.executable, "-m", "worker.cli", "worker", "--group", name]
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
    return code


def keep_running(
    roles: dict[str, list[str]],
    env: dict[str, str],
    embedded: EmbeddedRedis | None,
    started: str,
) -> int:
    """Run each role's command as a child (and the embedded Redis, if any) until SIGTERM or
    Ctrl-C, restarting what exits, unless a role exits more than five times in a minute;
    then stop them all. The exit code: 0, or 1 when a role kept exiting."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    stop = StopSignal()
    code = 0
    restarts: dict[str, list[float]] = {role: [] for role in roles}

    def spawn(role: str) -> None:
        # Own session: Ctrl-C reaches only us, and we stop each child exactly once.
        children[role] = subprocess.Popen(roles[role], env=env, start_new_session=True)  # noqa: S603

    try:
        for role in roles:
            spawn(role)
        console.print(started)
        while not stop.requested:
            if embedded is not None and not embedded.alive():
                err.print(
                    "[yellow]embedded Redis exited; restarting it (AOF keeps its data)[/yellow]"
                )
                embedded.start()
            for role, child in list(children.items()):
                if child.poll() is None or stop.requested:
                    continue
                now = time.monotonic()
                restarts[role] = [t for t in restarts[role] if now - t < 60] + [now]
                if len(restarts[role]) > 5:
                    err.print(f"[red]{role} keeps exiting ({child.returncode}); stopping[/red]")
                    stop.requested = True
                    code = 1
                else:
                    err.print(f"[yellow]{role} exited with {child.returncode}; restarting[/yellow]")
                    spawn(role)
            time.sleep(0.3)
    finally:
        console.print("stopping ...")
        # The API and workers first (they finish what they hold), then beat, then Redis
        # (which each of them still needs while stopping).
        stop_children([c for r, c in children.items() if r != "beat"], timeout=30)
        stop_children([c for r, c in children.items() if r == "beat"], timeout=30)
        if embedded is not None:
            embedded.stop()
        console.print("stopped")
    return code


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


def local_admin_token(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token
