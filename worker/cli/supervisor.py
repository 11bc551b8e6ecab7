"""Process supervision for `optout up` and `optout worker`: children, restarts, signals,
stopping."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from worker.cli.common import console, err, here
from worker.runtime.children import die_with_parent

if TYPE_CHECKING:
    from worker.runtime.embedded import EmbeddedRedis
    from worker.runtime.logs import LogFile, Sink

log_line = structlog.get_logger("optout.up")


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
    log: LogFile,
) -> int:
    """Run each role's command as a child (and the embedded Redis, if any) until SIGTERM or
    Ctrl-C, restarting what exits, unless a role exits more than five times in a minute;
    then stop them all. Every child's output goes to `log`; a child that exits on its own
    is reported here with the last lines it wrote to stderr. The exit code: 0, or 1 when a
    role kept exiting."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    pumps: dict[str, list[_Pump]] = {}
    stop = StopSignal()
    code = 0
    restarts: dict[str, list[float]] = {role: [] for role in roles}

    def spawn(role: str) -> None:
        # Own session: Ctrl-C reaches only us, and we stop each child exactly once.
        child = subprocess.Popen(  # noqa: S603
            roles[role],
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stderr is not None
        children[role] = child
        log_line.info("part_started", part=role, pid=child.pid)
        pumps[role] = [_Pump(child.stdout, log), _Pump(child.stderr, log, keep=_TAIL)]

    def exited(role: str, child: subprocess.Popen[bytes], then: str) -> None:
        for pump in pumps[role]:
            pump.join(timeout=2)  # the lines it wrote last
        log_line.warning("part_exited", part=role, pid=child.pid, code=child.returncode)
        tail = pumps[role][1].tail
        note = f"{role} exited with {child.returncode} ({then})"
        if tail:
            note += "; its last lines on stderr" + (
                "" if log.echo else f" (all in {here(log.path)})"
            )
            note += ":"
        elif not log.echo:
            note += f"; its output is in {here(log.path)}"
        err.print(note, highlight=False, markup=False)
        for line in tail:
            err.print(f"  {readable(line)}", highlight=False, markup=False)

    try:
        for role in roles:
            spawn(role)
        console.print(started, highlight=False, markup=False)
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
                    exited(role, child, "the sixth time in a minute: stopping")
                    stop.requested = True
                    code = 1
                else:
                    exited(role, child, "restarting it")
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
        for pump in (p for each in pumps.values() for p in each):
            pump.join(timeout=2)
        console.print("stopped")
    return code


def readable(line: str) -> str:
    """A JSON log line as a person reads it (`error uvicorn.error: ...`, a traceback's last
    line); any other line as it is."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "event" not in record:
        return line
    text = f"{record.get('level', '')} {record.get('logger', '')}: {record['event']}".strip()
    if exception := record.get("exception"):
        text += f" ({str(exception).strip().splitlines()[-1]})"
    return text


#: Lines of a child's stderr kept to show when it exits on its own.
_TAIL = 5


class _Pump(threading.Thread):
    """Copies a child's output to the log file, line by line, keeping the last `keep`; a
    line the log cannot take is counted in `lost` and the reading goes on."""

    def __init__(self, stream: IO[bytes], log: Sink, keep: int = 0) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.log = log
        self.tail: deque[str] = deque(maxlen=keep)
        self.lost = 0
        self.start()

    def run(self) -> None:
        with self.stream:
            for raw in self.stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    self.tail.append(line)
                try:
                    self.log.write(line + "\n")
                except Exception:  # noqa: BLE001
                    # Disk full, permission denied, a closed file: the line is lost, but
                    # the pipe must still be drained: a reader that stops leaves the child
                    # blocked on a full pipe, or dying on a closed one.
                    self.lost += 1


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


def claim(data_dir: Path) -> IO[str] | None:
    """Hold the data dir for this `optout up` (a lock the kernel lets go when the process
    ends, however it ends), or None when another holds it: a second `optout up` there would
    start a second Redis on the same append-only file and remove the first one's
    `redis.url` when it stops, so the ops commands lose the running deployment."""
    import fcntl
    import os

    handle = (data_dir / "up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def local_admin_token(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token
