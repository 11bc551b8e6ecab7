"""Benchmarks: the bulk and event paths against the obvious design, printed as figures and
ratios (never asserted). One machine, one run:

    python -m tests.perf.bench [--numbers 100000] [--latency 0.1]

Each path is measured from the first accept (or enqueue) to the last number confirmed at the
fake Voicenter (HTTP on loopback, TCP_NODELAY, optional latency per request).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

from tests.fakes.server import LoopbackServer
from tests.fakes.voicenter import FakeVoicenter
from worker.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class Procs:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**os.environ, **env}
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *argv: str) -> None:
        self.running.append(
            subprocess.Popen(
                list(argv),
                env=self.env,
                cwd=ROOT,
                stdout=(self.logs / f"{name}.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def stop(self) -> None:
        for p in self.running:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.running:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def baseline(redis_url: str, numbers: list[str], latency: float, logs: Path) -> float:
    fake = FakeVoicenter(delay=latency)
    prefix = f"bl-{uuid.uuid4().hex[:6]}:"
    with LoopbackServer(fake.handle) as server:
        env = {"BASELINE_BROKER": redis_url, "BASELINE_URL": server.url, "BASELINE_PREFIX": prefix}
        procs = Procs(env, logs)
        procs.start("baseline", sys.executable, "-m", "celery", "-A", "tests.perf.baseline",
                    "worker", "-c", "2", "-l", "WARNING")  # fmt: skip
        try:
            os.environ.update(env)
            from tests.perf.baseline import app

            started = time.perf_counter()
            for n in numbers:
                app.send_task("baseline.push_one", args=[n[1:]])
            wait(lambda: len(fake.blacklist) >= len(numbers), 3600)
            return time.perf_counter() - started
        finally:
            procs.stop()


def optout_path(
    redis_url: str, numbers: list[str], latency: float, logs: Path, per_request: int
) -> tuple[float, int, int]:
    """Seconds, provider requests, and the peak RSS (KiB) of the worker processes."""
    fake = FakeVoicenter(delay=latency)
    with LoopbackServer(fake.handle) as server:
        port = free_port()
        env = {
            "REDIS_URL": redis_url,
            "OPTOUT_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}:",
            "OPTOUT_DATA_DIR": str(logs / "data"),
            "OPTOUT_ADMIN_TOKEN": "bench",
            "OPTOUT_LOG_FORMAT": "json",
            "OPTOUT_BATCH_LINGER_MS": "200",
            "OPTOUT_SWEEP_INTERVAL_SECONDS": "0.2",
            "OPTOUT_PROVIDER_LIMITS": "voicenter=0/16",
            "VOICENTER_API_CODE": "good-code",
            "VOICENTER_BASE_URL": server.url,
        }
        procs = Procs(env, logs)
        me = [sys.executable, "-m", "worker.cli"]
        procs.start("api", *me, "api", "--port", str(port))
        procs.start("worker", *me, "worker", "--concurrency", "2", "--beat")
        url = f"http://127.0.0.1:{port}/v1/optouts"
        try:
            wait(lambda: _up(f"http://127.0.0.1:{port}/healthz"), 60)
            chunks = [numbers[i : i + per_request] for i in range(0, len(numbers), per_request)]
            client = httpx.Client(headers={"Authorization": "Bearer bench"}, timeout=60)

            def post(chunk: list[str]) -> None:
                client.post(url, json={"action": "add", "phones": chunk}).raise_for_status()

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(post, chunks))
            wait(lambda: len(fake.blacklist) >= len(numbers), 3600)
            elapsed = time.perf_counter() - started
            return elapsed, len(fake.requests), _peak_rss(procs)
        finally:
            procs.stop()


def _peak_rss(procs: Procs) -> int:
    total = 0
    for p in procs.running:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="optout-worker benchmarks")
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument(
        "--baseline-numbers", type=int, default=None, help="default: min(numbers, 20000)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="fake provider latency (s)")
    args = parser.parse_args(argv)
    n = args.numbers
    nb = args.baseline_numbers or min(n, 20_000)
    numbers = [f"+97259{i:07d}" for i in range(n)]
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="optout-bench-") as tmp:
        logs = Path(tmp)
        server = None
        url = os.environ.get("REDIS_URL", "")
        try:
            if not url or not redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                raise redis.RedisError
        except redis.RedisError:
            server = EmbeddedRedis(logs / "redis").start()
            url = server.url
        try:
            print(f"machine: {os.cpu_count()} cores; provider latency {args.latency * 1000:.0f} ms")
            base_s = baseline(url, numbers[:nb], args.latency, logs)
            base_rate = nb / base_s
            print(f"baseline (task + request per number): {nb} in {base_s:.1f} s = "
                  f"{base_rate:.0f} numbers/s")  # fmt: skip
            for label, per_request in (
                ("bulk (1,000 per request)", 1000),
                ("events (1 per request)", 1),
            ):
                count = n if per_request > 1 else min(n, 20_000)
                secs, requests, rss = optout_path(url, numbers[:count], args.latency, logs,
                                                  per_request)  # fmt: skip
                rate = count / secs
                ideal = math.ceil(count / 100)
                print(f"{label}: {count} in {secs:.1f} s = {rate:.0f} numbers/s "
                      f"({rate / base_rate:.1f}x baseline); provider requests {requests} vs "
                      f"ceil(N/100) {ideal} = {requests / ideal:.2f}; "
                      f"worker+api peak RSS {rss / 1024:.0f} MiB")  # fmt: skip
        finally:
            if server is not None:
                server.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = time.process_time() - cpu0
    print(f"load generator CPU: {cpu:.1f} s (max RSS {usage.ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
