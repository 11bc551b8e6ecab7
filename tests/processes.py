"""Separate OS processes for tests, drills and benchmarks: logged to files, each in its own
process group, stopped with SIGTERM (SIGKILL after 30 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = (sys.executable, "-m", "worker.cli")


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        # Each run's processes keep their own metrics, not the caller's directory's.
        inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {**inherited, **env}
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.log_offsets: dict[str, int] = {}  # where this start's lines begin in its log

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = self.log(name)
        self.log_offsets[name] = log.stat().st_size if log.exists() else 0
        self.running[name] = subprocess.Popen(
            list(argv),
            env=self.env,
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.running[name]

    def stop(self) -> None:
        for p in self.running.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.running.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
