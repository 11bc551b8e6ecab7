"""Benchmarks: every path against the obvious design, printed as figures and ratios (never
asserted). One machine, one run, one command:

    python -m tests.perf.bench                       # 100,000 numbers; fakes at 0 and 100 ms
    python -m tests.perf.bench --numbers 20000 --latency 0

Each path runs against its own API (`optout api --workers N`) and worker (`optout worker
--beat`) processes, on an embedded Redis with AOF `always` (an accept is durable before it
is answered), with fake providers on loopback HTTP. A path is timed from its first request
(or enqueue) to the moment the fake holds every number. HTTP load comes from
`tests/perf/load.py` in its own process, whose CPU is printed beside each figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.fakes.base import FakeProvider
from tests.fakes.providers import env_for, listed, make_fake, targets_of
from tests.fakes.server import LoopbackServer
from tests.fakes.weya import FakeWeya
from tests.perf.baseline import make_app
from tests.perf.load import BATCH_ID, number
from tests.processes import CLI, ROOT, Processes
from worker.runtime.embedded import EmbeddedRedis, free_port

PROVIDERS = ("voicenter", "phonely", "voodoosms", "weya", "daktela")
LINGER_MS = 200
TOKEN = "bench"


def wait(condition: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def digits(i: int) -> str:
    return number(i)[1:]


# -- processes --------------------------------------------------------------------------


class Procs(Processes):
    """Our processes, with what the bench measures of them."""

    def wait_ready(self, name: str, marker: bytes = b" ready.") -> None:
        """Until the Celery worker (or beat: its own `marker`) says it is ready: start-up
        is not throughput."""
        log = self.log(name)

        def ready() -> bool:
            with log.open("rb") as f:
                f.seek(self.log_offsets[name])
                return marker in f.read()

        if not wait(ready, 60, every=0.1):
            raise RuntimeError(f"{name} did not start (see {log})")

    def peak_rss_mib(self, name: str) -> float:
        """High-water RSS of a process and all its children (uvicorn and Celery fork)."""
        root = self.running[name].pid
        return sum(_hwm_kib(pid) for pid in process_tree(root)) / 1024

    def cpu_seconds(self, name: str) -> float:
        return sum(_cpu_seconds(pid) for pid in process_tree(self.running[name].pid))


def process_tree(root: int) -> list[int]:
    """`root` and every process below it."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and of its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the name: state is field 3, so utime..cstime (14..17) are indices 11..14 here.
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def load(url: str, kind: str, logs: Path, **options: Any) -> dict[str, Any]:
    """Run the load generator in its own process; answer its figures."""
    argv = [sys.executable, "-m", "tests.perf.load", url, "--kind", kind, "--token", TOKEN]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in figures["statuses"].items() if k not in ("200", "202")}
    if bad:
        (logs / "load-errors.txt").write_text(json.dumps(figures))
        raise RuntimeError(f"{kind}: unexpected answers {bad} (see the api log)")
    return figures


# -- one system under test ---------------------------------------------------------------


@dataclass
class Bench:
    redis_url: str
    logs: Path
    latency: float
    api_workers: int
    worker_concurrency: int

    def fresh_redis(self) -> None:
        """Empty the bench's own Redis and its AOF after a run: each path starts alike, not
        behind the data (and AOF rewrites) of the paths before it."""
        client = redis.Redis.from_url(self.redis_url)
        client.flushall()
        client.bgrewriteaof()
        wait(lambda: not client.info("persistence")["aof_rewrite_in_progress"], 120, every=0.1)

    def redis_cpu(self) -> float:
        info = redis.Redis.from_url(self.redis_url).info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass
class Stack:
    """Fake providers, and our API and worker processes pointed at them."""

    fakes: dict[str, FakeProvider]
    procs: Procs
    url: str
    load_cpu: float | None = None  # the load generator's, when one fed this stack
    load_seconds: float | None = None  # how long the load generator's requests took

    def holds(self, first: int, count: int) -> bool:
        for name, fake in self.fakes.items():
            for target in targets_of(name):
                with fake.lock:
                    have = listed(fake, target)
                    if len(have) < count or any(
                        digits(i) not in have for i in range(first, first + count)
                    ):
                        return False
        return True

    def provider_requests(self) -> dict[str, int]:
        return {name: len(fake.requests) for name, fake in self.fakes.items()}


class BenchCalls:
    """Every call of the load generator's batch exists, as far as the fake Weya knows."""

    def __contains__(self, call: object) -> bool:
        return isinstance(call, tuple) and call[0] == BATCH_ID


@contextmanager
def stack(
    bench: Bench,
    providers: tuple[str, ...],
    worker: bool = True,
    env_extra: dict[str, str] | None = None,
    worker_argv: tuple[str, ...] | None = None,
    beat: bool = False,
) -> Iterator[Stack]:
    """`beat`: `optout beat` as a process of its own too (pass a `worker_argv` without
    `--beat`, or the sweeps run twice)."""
    with ExitStack() as exits:
        exits.callback(bench.fresh_redis)
        env = {
            "REDIS_URL": bench.redis_url,
            "OPTOUT_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}:",
            "OPTOUT_DATA_DIR": str(bench.logs / "data"),
            "OPTOUT_ADMIN_TOKEN": TOKEN,
            "OPTOUT_WEBHOOK_TOKENS": f"voicenter:{TOKEN},dnc:{TOKEN}",
            "OPTOUT_VOICENTER_OPTOUT_DTMF": "9",
            "OPTOUT_LOG_FORMAT": "json",
            "OPTOUT_BATCH_LINGER_MS": str(LINGER_MS),
            # No request-rate cap: the fakes are ours; 16 requests in flight per provider.
            "OPTOUT_PROVIDER_LIMITS": ",".join(f"{p}=0/16" for p in providers),
            # As many processes in the per-number group as in the main one (the baseline
            # gets as many too).
            "OPTOUT_PER_NUMBER_CONCURRENCY": str(bench.worker_concurrency),
        }
        fakes: dict[str, FakeProvider] = {}
        for name in providers:
            fake = make_fake(name)
            fake.delay = bench.latency
            if isinstance(fake, FakeWeya):
                fake.call_records = BenchCalls()  # type: ignore[assignment]
            server = exits.enter_context(LoopbackServer(fake.handle))
            env.update(env_for(name, server.url))
            fakes[name] = fake
        env.update(env_extra or {})
        procs = Procs(env, bench.logs)
        exits.callback(procs.stop)
        port = free_port()
        procs.start("api", *CLI, "api", "--port", str(port), "--workers", str(bench.api_workers))
        if worker:
            argv = worker_argv or (*CLI, "worker", "--beat",
                                   "--concurrency", str(bench.worker_concurrency))  # fmt: skip
            procs.start("worker", *argv)
        if beat:
            procs.start("beat", *CLI, "beat")
        url = f"http://127.0.0.1:{port}"
        if not wait(lambda: _up(url + "/healthz"), 60, every=0.1):
            raise RuntimeError(f"the API did not start (see {bench.logs / 'api.log'})")
        if worker:
            procs.wait_ready("worker")
        if beat:
            procs.wait_ready("beat", BEAT_READY)
        yield Stack(fakes, procs, url)


#: The last line of Celery beat's banner, printed as its scheduler starts (its own log
#: lines are quiet below WARNING).
BEAT_READY = b". maxinterval ->"


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- measured paths ----------------------------------------------------------------------


@dataclass
class Figure:
    label: str
    count: int
    seconds: float
    requests: dict[str, int]
    api_mib: float = 0.0
    worker_mib: float = 0.0
    load_cpu: float | None = None
    cpu: dict[str, float] | None = None  # seconds per part of the system during the run

    @property
    def rate(self) -> float:
        return self.count / self.seconds


Feed = Callable[[Stack, int, int], float]  # (stack, first, count) -> start (monotonic)


def measure(bench: Bench, label: str, providers: tuple[str, ...], first: int, count: int,
            feed: Feed) -> Figure:  # fmt: skip
    with stack(bench, providers) as s:
        before = {"api": s.procs.cpu_seconds("api"), "worker": s.procs.cpu_seconds("worker"),
                  "redis": bench.redis_cpu()}  # fmt: skip
        started = feed(s, first, count)
        if not wait(lambda: s.holds(first, count), 3600, every=0.05):
            raise RuntimeError(f"{label}: not every number arrived")
        seconds = time.monotonic() - started
        cpu = {"API": s.procs.cpu_seconds("api") - before["api"],
               "worker": s.procs.cpu_seconds("worker") - before["worker"],
               "Redis": bench.redis_cpu() - before["redis"]}  # fmt: skip
        return Figure(label, count, seconds, s.provider_requests(),
                      s.procs.peak_rss_mib("api"), s.procs.peak_rss_mib("worker"),
                      s.load_cpu, cpu)  # fmt: skip


def feed_http(kind: str, per_request: int = 1) -> Feed:
    def feed(s: Stack, first: int, count: int) -> float:
        per = min(per_request, count)
        if count % per or first % per:
            raise ValueError(f"{kind}: {count} numbers from {first} do not split into {per}s")
        # Events: 64 connections, as for the accept ratio (with 16 and two API processes,
        # which process took which connection was luck). Bulk: 4 requests of 1,000 at once.
        out = load(s.url, kind, s.procs.logs, first=first // per, count=count // per,
                   per_request=per, connections=64 if per == 1 else 4)  # fmt: skip
        s.load_cpu = out["cpu_seconds"]
        s.load_seconds = float(out["seconds"])
        # The generator's own start, not its process's start-up.
        return float(out["started"])

    return feed


def feed_import(s: Stack, first: int, count: int) -> float:
    path = s.procs.logs / f"import-{first}.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["phone"])
        out.writerows([number(i)] for i in range(first, first + count))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "import", str(path), "--source", "bench"],
        env=s.procs.env, cwd=ROOT, capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"import failed: {done.stderr.decode()[-2000:]}")
    return started


def baseline(bench: Bench, count: int, concurrency: int) -> Figure:
    fake = make_fake("voicenter")
    fake.delay = bench.latency
    prefix = f"bl-{uuid.uuid4().hex[:6]}:"
    with LoopbackServer(fake.handle) as server:
        env = {"BASELINE_BROKER": bench.redis_url, "BASELINE_URL": server.url,
               "BASELINE_PREFIX": prefix}  # fmt: skip
        procs = Procs(env, bench.logs)
        procs.start("worker", sys.executable, "-m", "celery", "-A", "tests.perf.baseline",
                    "worker", "-c", str(concurrency), "-l", "INFO")  # fmt: skip
        try:
            # This run's own queue: an app from an earlier run would publish to its prefix.
            app = make_app(bench.redis_url, prefix)
            procs.wait_ready("worker")
            worker_cpu, redis_cpu = procs.cpu_seconds("worker"), bench.redis_cpu()
            started = time.monotonic()
            with app.producer_or_acquire() as producer:
                for i in range(count):
                    app.send_task("baseline.push_one", args=[digits(i)], producer=producer)
            if not wait(lambda: len(fake.listed()) >= count, 3600, every=0.05):
                raise RuntimeError("baseline: not every number arrived")
            seconds = time.monotonic() - started
            cpu = {"worker": procs.cpu_seconds("worker") - worker_cpu,
                   "Redis": bench.redis_cpu() - redis_cpu}  # fmt: skip
            return Figure(f"baseline: task + request per number (-c {concurrency})", count,
                          seconds, {"voicenter": len(fake.requests)}, 0.0,
                          procs.peak_rss_mib("worker"), None, cpu)  # fmt: skip
        finally:
            procs.stop()
            bench.fresh_redis()


def accept_ratio(
    bench: Bench, seconds: float, connections: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same server, the same generator: `GET /healthz` (no I/O) against opt-out CDRs
    (each written to Redis with AOF always and its flush queued) for `seconds` each."""
    with stack(bench, ("voicenter",), worker=False) as s:
        load(s.url, "noop", s.procs.logs, seconds=2, connections=connections)  # warm up
        noop = load(s.url, "noop", s.procs.logs, seconds=seconds, connections=connections)
        cdr = load(s.url, "cdr", s.procs.logs, seconds=seconds, connections=connections,
                   first=8_000_000)  # fmt: skip
    return noop, cdr


def propagation(bench: Bench, rate: float, seconds: float) -> tuple[float, float, int]:
    """p50 and p99 seconds from a CDR's send to its number reaching the fake, at a steady
    rate; and how many were measured."""
    with stack(bench, ("voicenter",)) as s:
        times = s.procs.logs / "sent.json"
        first = 9_000_000
        load(s.url, "cdr", s.procs.logs, rate=rate, seconds=seconds, connections=32,
             first=first, times=times)  # fmt: skip
        sent = {int(i): t for i, t in json.loads(times.read_text()).items()}
        fake = s.fakes["voicenter"]
        wait(lambda: all(digits(i) in fake.first_seen for i in sent), 120)
        delays = sorted(fake.first_seen[digits(i)] - t for i, t in sent.items()
                        if digits(i) in fake.first_seen)  # fmt: skip
    if not delays:
        return 0.0, 0.0, 0
    return (delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))],
            len(delays))  # fmt: skip


def fairness(
    bench: Bench, backlog: int, rate: float, seconds: float, one_pool: bool
) -> tuple[float, float, int, int]:
    """While VoodooSMS (one request per number, at its default limits) drains a backlog of
    `backlog` numbers, opt-outs to every provider arrive at `rate`/s for `seconds`: p50 and
    p99 seconds from each one's send to its number reaching Voicenter and both Phonely
    agents (the aim: within linger + 1 s); how many were measured; and how many
    of the backlog VoodooSMS held by then. `one_pool`: the design before worker groups,
    every queue in one Celery pool."""
    providers = ("voicenter", "phonely", "voodoosms")
    env = {
        # VoodooSMS at the defaults (20 requests/s, 8 at once); the bulk fakes unlimited.
        "OPTOUT_PROVIDER_LIMITS": "voicenter=0/16,phonely=0/16",
        "OPTOUT_ROUTES": "backlog=voodoosms",
        "OPTOUT_BATCH_LINGER_MS": "1000",  # the default: the target is linger + 1 s
    }
    argv = None
    if one_pool:
        queues = "optout.default,optout.push.voicenter,optout.push.phonely,optout.push.voodoosms"
        argv = (sys.executable, "-m", "celery", "-A", "worker", "worker", "--beat", "-c", "2",
                "--loglevel=INFO",
                "-Q", queues, "--without-gossip", "--without-mingle",
                f"--schedule={bench.logs / 'one-pool-beat'}")  # fmt: skip
    with stack(bench, providers, env_extra=env, worker_argv=argv) as s:
        path = s.procs.logs / "backlog.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["phone"])
            out.writerows([number(i)] for i in range(20_000_000, 20_000_000 + backlog))
        subprocess.run(
            [*CLI, "import", str(path), "--source", "backlog"],
            env=s.procs.env, cwd=ROOT, capture_output=True, check=True,
        )  # fmt: skip
        voodoo = s.fakes["voodoosms"]
        wait(lambda: len(voodoo.requests) > 50, 60)  # the backlog is draining
        times = s.procs.logs / "fair-sent.json"
        first = 21_000_000
        load(s.url, "optouts", s.procs.logs, rate=rate, seconds=seconds, connections=4,
             first=first, times=times)  # fmt: skip
        sent = {int(i): t for i, t in json.loads(times.read_text()).items()}
        bulk = [s.fakes["voicenter"], s.fakes["phonely"]]
        wait(lambda: all(digits(i) in f.first_seen for i in sent for f in bulk), 120)
        delays = sorted(
            max(f.first_seen.get(digits(i), math.inf) for f in bulk) - t
            for i, t in sent.items()
        )  # fmt: skip
        drained = len(voodoo.listed())
    if not delays:
        return 0.0, 0.0, 0, drained
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return delays[len(delays) // 2], p99, len(delays), drained


# -- report ------------------------------------------------------------------------------


def show(figure: Figure, base: Figure) -> str:
    line = (f"  {figure.label}: {figure.count:,} in {figure.seconds:.1f} s = "
            f"{figure.rate:,.0f} numbers/s = {figure.rate / base.rate:.1f}x baseline")  # fmt: skip
    parts = []
    for name, requests in figure.requests.items():
        ideal = len(targets_of(name)) * math.ceil(figure.count / IDEAL_BATCH[name])
        parts.append(f"{name} {requests:,} requests ({requests / ideal:.2f} of ideal)")
    line += "\n      " + "; ".join(parts)
    memory = [f"{name} {mib:.0f} MiB" for name, mib in
              (("API", figure.api_mib), ("worker", figure.worker_mib)) if mib]  # fmt: skip
    line += "\n      peak RSS: " + ", ".join(memory)
    spent = [f"{name} {sec:.1f} s" for name, sec in (figure.cpu or {}).items()]
    if figure.load_cpu is not None:
        spent.append(f"load generator {figure.load_cpu:.1f} s")
    if spent:
        line += "\n      CPU: " + ", ".join(spent)
    return line


#: Numbers per request each provider's API takes (ideal: ceil(N / this) per target).
IDEAL_BATCH = {"voicenter": 100, "phonely": 100, "voodoosms": 1, "weya": 1, "daktela": 1}


def run_latency(bench: Bench, args: argparse.Namespace) -> None:
    n, ne, nb, np_ = args.numbers, args.event_numbers, args.baseline_numbers, args.provider_numbers
    # Both designs get the same worker processes: 2 (the cores) when the provider answers at
    # once, 16 when every request waits 100 ms (waiting needs no core).
    concurrency = args.concurrency or (2 if bench.latency == 0 else 16)
    bench.worker_concurrency = concurrency
    print(
        f"\n== fake providers answering after {bench.latency * 1000:.0f} ms; "
        f"{concurrency} worker processes each",
        flush=True,
    )
    base = baseline(bench, nb, concurrency)
    print(show(base, base), flush=True)
    voicenter = ("voicenter",)
    paths: list[tuple[str, tuple[str, ...], int, Feed]] = [
        ("bulk: /v1/optouts, 1,000 per request", voicenter, n, feed_http("optouts", 1000)),
        ("bulk: optout import (CSV)", voicenter, n, feed_import),
        ("events: /v1/optouts, 1 per request", voicenter, ne, feed_http("optouts")),
        ("events: Voicenter CDR webhook", voicenter, ne, feed_http("cdr")),
    ]
    for name in PROVIDERS:
        feed = feed_http("dnc") if name == "weya" else feed_http("optouts", 1000)
        how = "DNC trigger per call" if name == "weya" else "bulk"
        paths.append((f"provider {name} alone ({how})", (name,), np_, feed))
    first = 0
    figures = []
    for label, providers, count, feed in paths:
        if count <= 0:
            continue
        figure = measure(bench, label, providers, first, count, feed)
        print(show(figure, base), flush=True)
        figures.append(figure)
        first += count
    # This machine's speed drifts by tens of percent over minutes: the baseline again at the
    # end, and every ratio against the mean of both runs.
    again = baseline(bench, nb, concurrency)
    mean = (base.rate + again.rate) / 2
    print(f"  baseline again at the end: {again.rate:,.0f} numbers/s; against the mean of "
          f"both ({mean:,.0f}/s):", flush=True)  # fmt: skip
    for figure in figures:
        print(f"    {figure.label}: {figure.rate / mean:.1f}x", flush=True)


#: What `--only` can choose: the accept ratio, propagation, fairness, the throughput paths.
PARTS = ("ratio", "propagation", "fairness", "paths")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="optout-worker benchmarks")
    parser.add_argument("--numbers", type=int, default=100_000, help="bulk paths")
    parser.add_argument("--event-numbers", type=int, default=None, help="default: --numbers")
    parser.add_argument("--baseline-numbers", type=int, default=None,
                        help="default: min(numbers, 10000)")  # fmt: skip
    parser.add_argument("--provider-numbers", type=int, default=None,
                        help="each provider alone; default: min(numbers, 3000)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=None,
                        help="worker processes, ours and the baseline's (default 2; 16 with "
                             "provider latency)")  # fmt: skip
    parser.add_argument("--latency", type=float, action="append", default=None,
                        help="fake provider latency in s; repeat (default: 0 and 0.1)")  # fmt: skip
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=500, help="propagation: events/s")
    parser.add_argument("--seconds", type=float, default=20, help="propagation and ratio runs")
    parser.add_argument("--backlog", type=int, default=20_000,
                        help="fairness: the per-number provider's backlog (0: skip)")  # fmt: skip
    parser.add_argument("--only", choices=PARTS, action="append", default=None,
                        help="run only these parts (repeatable; default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    parts = set(args.only or PARTS)
    args.event_numbers = args.numbers if args.event_numbers is None else args.event_numbers
    args.baseline_numbers = args.baseline_numbers or min(args.numbers, 10_000)
    args.provider_numbers = (min(args.numbers, 3_000) if args.provider_numbers is None
                             else args.provider_numbers)  # fmt: skip
    latencies = args.latency or [0.0, 0.1]
    with tempfile.TemporaryDirectory(prefix="optout-bench-") as tmp:
        logs = Path(tmp)
        # Its own Redis, persisted as in production: never a database holding others' keys.
        redis_server = EmbeddedRedis(logs / "redis").start()
        try:
            bench = Bench(redis_server.url, logs, 0.0, args.api_workers, args.concurrency or 2)
            print(_machine(args), flush=True)
            # One server process first: its no-op and its accepts get the same core, so the
            # ratio is the accept's own cost. Then all of them, with enough connections that
            # each process gets its share (with 16, which process accepts which connection
            # is luck, and the no-op figure swung between one and two processes' worth).
            for workers, connections in ((1, 16), (args.api_workers, 64)):
                if "ratio" not in parts:
                    break
                ratio_bench = replace(bench, api_workers=workers)
                noop, cdr = accept_ratio(ratio_bench, args.seconds, connections)
                print(_ratio(noop, cdr, args.seconds, workers, connections), flush=True)
            if "propagation" in parts:
                p50, p99, measured = propagation(bench, args.rate, args.seconds)
                print(f"\n== propagation at {args.rate:.0f} CDRs/s for {args.seconds:.0f} s "
                      f"({measured:,} numbers): p50 {p50:.2f} s, p99 {p99:.2f} s; target "
                      f"linger + 1 s = {LINGER_MS / 1000 + 1:.1f} s", flush=True)  # fmt: skip
            if args.backlog and "fairness" in parts:
                print(f"\n== fairness: new opt-outs at 2/s for {args.seconds:.0f} s while "
                      f"VoodooSMS drains {args.backlog:,} numbers at its default limits; "
                      "from send to Voicenter and both Phonely agents (target linger + 1 s "
                      "= 2.0 s)", flush=True)  # fmt: skip
                for one_pool in (False, True):
                    f50, f99, n_fair, drained = fairness(
                        bench, args.backlog, 2.0, args.seconds, one_pool
                    )
                    label = ("one pool for every queue (before)" if one_pool
                             else "optout worker (worker groups)")  # fmt: skip
                    print(f"  {label}: p50 {f50:.2f} s, p99 {f99:.2f} s ({n_fair} opt-outs; "
                          f"VoodooSMS held {drained:,} of the backlog)", flush=True)  # fmt: skip
            for latency in latencies if "paths" in parts else []:
                bench.latency = latency
                run_latency(bench, args)
        finally:
            redis_server.stop()
    return 0


def machine() -> str:
    """This machine in a few words: cores, memory, CPU model."""
    return f"{os.cpu_count()} cores, {_mem_gib():.0f} GiB, {_cpu_model()}"


def _machine(args: argparse.Namespace) -> str:
    return (
        f"machine: {machine()}\n"
        f"API {args.api_workers} processes; worker processes (ours and the baseline's): "
        f"{args.concurrency or '2, or 16 with provider latency'}; "
        f"Redis embedded, AOF always; batch linger {LINGER_MS} ms"
    )


def _ratio(noop: dict[str, Any], cdr: dict[str, Any], seconds: float, workers: int,
           connections: int) -> str:  # fmt: skip
    noop_rate = noop["requests"] / noop["seconds"]
    cdr_rate = cdr["requests"] / cdr["seconds"]
    return (
        f"\n== webhook accept vs the same server's no-op endpoint ({workers} API process"
        f"{'es' if workers > 1 else ''}, {connections} connections, {seconds:.0f} s each)\n"
        f"  GET /healthz: {noop_rate:,.0f} requests/s (p99 {noop['p99_ms']} ms); CDR webhook: "
        f"{cdr_rate:,.0f} accepts/s (p99 {cdr['p99_ms']} ms); ratio {cdr_rate / noop_rate:.2f} "
        f"(target 0.5)"
    )


def _mem_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
