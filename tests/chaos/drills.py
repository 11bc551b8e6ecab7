"""Fault drills: real Redis, real worker processes, fake providers on loopback, faults injected.

Each drill prints accepted / delivered / dead-lettered / lost / stale and returns them.
Run them all at full size with `python -m tests.chaos.drills`, one with `--drill NAME`, or the
reduced versions with `--quick` (what CI runs through tests/chaos/test_drills.py).
Redis: REDIS_URL when it answers (the drill takes its own key prefix and deletes only its
keys), else an embedded Redis in a temporary directory. The Redis drill always uses its own
embedded Redis, since it kills it.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from config import load_settings
from tests.fakes.base import Answer, FakeProvider
from tests.fakes.providers import env_for, make_fake
from tests.fakes.server import LoopbackServer
from worker import logs
from worker import pipeline as work
from worker.accept import Event, PhoneInput, StoreUnavailableError, accept
from worker.app import celery_dispatcher
from worker.embedded import EmbeddedRedis
from worker.pipeline import Pipeline
from worker.providers.base import Action
from worker.runtime import build_pipeline

ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ("voicenter", "phonely")


@dataclass
class Result:
    drill: str
    accepted: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    lost: int = 0
    stale: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what failed besides lost/stale

    def show(self) -> str:
        line = (
            f"{self.drill}: accepted {self.accepted}, delivered {self.delivered}, "
            f"dead-lettered {self.dead_lettered}, lost {self.lost}, stale {self.stale}"
        )
        return line + "".join(f"\n  {n}" for n in self.notes + self.problems)


class Lab:
    """Redis + fakes + worker processes for one drill; cleans up what it made."""

    def __init__(self, stack: ExitStack, redis_url: str, workdir: Path, **env: str) -> None:
        self.prefix = f"optout-drill-{uuid.uuid4().hex[:8]}:"
        self.workdir = workdir
        self.fakes: dict[str, FakeProvider] = {}
        self.env = {
            "REDIS_URL": redis_url,
            "OPTOUT_KEY_PREFIX": self.prefix,
            "OPTOUT_DATA_DIR": str(workdir / "data"),
            "OPTOUT_BATCH_LINGER_MS": "300",
            "OPTOUT_SWEEP_INTERVAL_SECONDS": "0.3",
            "OPTOUT_RECOVER_INTERVAL_SECONDS": "0.5",
            "OPTOUT_LEASE_SECONDS": "5",
            "OPTOUT_RETRY_BASE_SECONDS": "0.2",
            "OPTOUT_RETRY_MAX_SECONDS": "2",
            "OPTOUT_HTTP_TIMEOUT_SECONDS": "1",
            "OPTOUT_LOG_FORMAT": "json",
            "OPTOUT_PROVIDER_LIMITS": "voicenter=0/8,phonely=0/8",
        }
        for name in PROVIDERS:
            fake = make_fake(name)
            server = stack.enter_context(LoopbackServer(fake.handle))
            self.fakes[name] = fake
            self.env.update(env_for(name, server.url))
        self.env.update(env)
        self.workers: list[subprocess.Popen[bytes]] = []
        stack.callback(self.close)
        self.pipe = build_pipeline(
            load_settings(self.env), dispatcher=celery_dispatcher(load_settings(self.env))
        )

    def start_worker(self, beat: bool = False) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "2"]
        if beat:
            args.append("--beat")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            args,
            env={**os.environ, **self.env},
            cwd=ROOT,
            stdout=(self.workdir / "workers.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(process)
        try:
            client = redis.Redis.from_url(self.env["REDIS_URL"])
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        except redis.RedisError:
            pass

    def targets(self) -> list[str]:
        return sorted(self.pipe.targets())

    def listed(self, target: str) -> set[str]:
        fake = self.fakes[target.split(":", 1)[0]]
        return fake.listed(target.split(":", 1)[1]) if ":" in target else fake.listed()

    def settled(self) -> bool:
        counts = self.pipe.store.counts(self.targets())
        busy = any(any(c.values()) for c in counts.values())
        return not busy and not self.pipe.store.retry_counts()

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                time.sleep(1.0)  # and stays so (nothing re-staged by a late completion)
                if self.settled():
                    return True
            time.sleep(0.3)
        return False

    def compare(self, result: Result, numbers: list[str]) -> Result:
        """Each number at each target: delivered (provider state = ledger), dead-lettered,
        lost (ledger blocks, provider lacks it) or stale (provider blocks, ledger does not)."""
        dead = {(d["target"], d["phone"]) for d in self.pipe.store.dead_letters()}
        result.dead_lettered = len(dead)
        for target in self.targets():
            held = self.listed(target)
            for n in numbers:
                blocked = self.pipe.store.ledger(n).get("s") == "blocked"
                if (target, n) in dead:
                    continue
                if blocked == (n[1:] in held):
                    result.delivered += 1
                elif blocked:
                    result.lost += 1
                else:
                    result.stale += 1
        return result


@contextmanager
def redis_for_drill(workdir: Path, own: bool = False) -> Iterator[tuple[str, EmbeddedRedis | None]]:
    url = os.environ.get("REDIS_URL")
    if not own and url:
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                yield url, None
                return
        except redis.RedisError:
            pass
    server = EmbeddedRedis(workdir / "redis").start()
    try:
        yield server.url, server
    finally:
        server.stop()


def interleaved_events(numbers: list[str], per_number: int, rng: random.Random) -> list[Event]:
    """Adds and removes on the same numbers with distinct times, delivered out of order."""
    base = datetime.now(UTC) - timedelta(hours=1)
    events = []
    for n in numbers:
        times = sorted(rng.sample(range(3000), per_number))
        for k, t in enumerate(times):
            action = Action.ADD if (k % 2 == 0) != (rng.random() < 0.2) else Action.REMOVE
            events.append(Event("drill", action, [PhoneInput(n)],
                                occurred_at=base + timedelta(seconds=t)))  # fmt: skip
    rng.shuffle(events)
    return events


def accept_all(pipe: Pipeline, events: list[Event], result: Result) -> None:
    for event in events:
        while True:
            try:
                accept(pipe, event)
                result.accepted += 1
                break
            except StoreUnavailableError:
                time.sleep(0.2)  # what a sender does on 503: try again


def drill_worker_kills(workdir: Path, numbers: int, kills: int) -> Result:
    """kill -9 a worker `kills` times while adds and removes on the same numbers flow."""
    result = Result("worker kill -9")
    rng = random.Random(1)
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir)
        for fake in lab.fakes.values():
            fake.delay = 0.05
        beat = lab.start_worker(beat=True)
        victims = [lab.start_worker(), lab.start_worker()]
        phones = [f"+97255{i:07d}" for i in range(numbers)]
        events = interleaved_events(phones, 3, rng)
        feeder = threading.Thread(target=accept_all, args=(lab.pipe, events, result))
        feeder.start()
        for _ in range(kills):
            time.sleep(1.0)
            victim = victims.pop(rng.randrange(len(victims)))
            lab.kill(victim)
            victims.append(lab.start_worker())
        feeder.join()
        result.notes.append(f"workers killed: {kills}; beat kept: {beat.poll() is None}")
        if not lab.wait_settled(180):
            result.problems.append("did not settle in 180 s")
        return lab.compare(result, phones)


def drill_redis_kill(workdir: Path, numbers: int) -> Result:
    """kill -9 Redis (AOF always) in the middle of a run and start it again."""
    result = Result("redis kill -9")
    with ExitStack() as stack:
        url, server = stack.enter_context(redis_for_drill(workdir, own=True))
        assert server is not None
        lab = Lab(stack, url, workdir)
        lab.start_worker(beat=True)
        phones = [f"+97256{i:07d}" for i in range(numbers)]
        acknowledged: list[str] = []

        def feed() -> None:
            for n in phones:
                event = Event("drill", Action.ADD, [PhoneInput(n)])
                while True:
                    try:
                        accept(lab.pipe, event)
                        acknowledged.append(n)
                        result.accepted += 1
                        break
                    except StoreUnavailableError:
                        time.sleep(0.1)

        feeder = threading.Thread(target=feed)
        feeder.start()
        while len(acknowledged) < numbers // 2:
            time.sleep(0.05)
        server.kill()
        time.sleep(1.0)
        server.start()
        feeder.join()
        missing = [n for n in acknowledged if lab.pipe.store.ledger(n).get("s") != "blocked"]
        result.notes.append(f"acknowledged then missing from the ledger: {len(missing)}")
        result.lost += len(missing)
        if not lab.wait_settled(120):
            result.problems.append("did not settle in 120 s")
        if lab.workers[0].poll() is not None:
            # Supervisors restart it, but a Redis restart must not cost a worker.
            log = (workdir / "workers.log").read_text(errors="replace").splitlines()
            why = [line for line in log if "CRITICAL" in line or "Error" in line][-3:]
            result.problems.append(f"the worker exited ({lab.workers[0].returncode}): {why}")
        return lab.compare(result, phones)


def _random_failures(rng: random.Random, lock: threading.Lock) -> Callable[[], Answer | None]:
    burst = {"left": 0}

    def chaos() -> Answer | None:
        with lock:
            roll = rng.random()
            if burst["left"] > 0:
                burst["left"] -= 1
                return 429, {"error": "slow down"}, {"Retry-After": "1"}
            if roll < 0.02:
                burst["left"] = 5
            if roll < 0.30:
                return 503, {"error": "injected"}, {}
        if roll < 0.40:
            time.sleep(1.5)  # longer than the 1 s client timeout
            return 503, {"error": "too late"}, {}
        return None

    return chaos


def drill_random_failures(workdir: Path, numbers: int) -> Result:
    """30% 5xx, 10% timeouts, bursts of 429: everything delivered or dead-lettered with a
    reason; after the fakes heal and a replay, everything delivered."""
    result = Result("providers failing at random")
    rng = random.Random(3)
    lock = threading.Lock()
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, OPTOUT_MAX_ATTEMPTS="4")
        for fake in lab.fakes.values():
            fake.chaos = _random_failures(rng, lock)
        lab.start_worker(beat=True)
        lab.start_worker()
        phones = [f"+97257{i:07d}" for i in range(numbers)]
        for start in range(0, numbers, 50):
            batch = [PhoneInput(p) for p in phones[start : start + 50]]
            accept(lab.pipe, Event("drill", Action.ADD, batch))
            result.accepted += 1
        lab.wait_settled(240)
        dead = lab.pipe.store.dead_letters()
        result.notes.append(
            f"injected failures: {sum(f.injected for f in lab.fakes.values())}; dead letters "
            f"before replay: {len(dead)} (all with a reason: {all(d.get('reason') for d in dead)})"
        )
        for fake in lab.fakes.values():
            fake.chaos = None
        work.replay(lab.pipe, [d["id"] for d in dead], "drill")
        if not lab.wait_settled(120):
            result.problems.append("did not settle after replay")
        return lab.compare(result, phones)


def drill_provider_down(workdir: Path, numbers: int, down_seconds: float) -> Result:
    """A provider down for a while: nothing lost, the backlog drains when it returns, and
    the request rate while it is down stays bounded (backoff, not a hot loop)."""
    result = Result("provider down")
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, OPTOUT_MAX_ATTEMPTS="100", OPTOUT_RETRY_MAX_SECONDS="5")
        down = {"until": time.monotonic() + down_seconds}
        hits = {"n": 0}

        def outage() -> Answer | None:
            if time.monotonic() < down["until"]:
                hits["n"] += 1
                return 503, {"error": "down for maintenance"}, {}
            return None

        lab.fakes["voicenter"].chaos = outage
        lab.start_worker(beat=True)
        phones = [f"+97258{i:07d}" for i in range(numbers)]
        for start in range(0, numbers, 100):
            batch = [PhoneInput(p) for p in phones[start : start + 100]]
            accept(lab.pipe, Event("drill", Action.ADD, batch))
            result.accepted += 1
        time.sleep(max(0.0, down["until"] - time.monotonic()))
        rate = hits["n"] / down_seconds
        result.notes.append(f"requests while down: {hits['n']} ({rate:.1f}/s)")
        if rate > 20:
            result.problems.append("hot retry loop: more than 20 requests/s while down")
            result.lost += 1
        if not lab.wait_settled(120):
            result.problems.append("backlog did not drain in 120 s")
        return lab.compare(result, phones)


def run(quick: bool, only: str | None = None) -> list[Result]:
    sizes = {
        "worker_kills": (300, 4) if quick else (10_000, 10),
        "redis_kill": 400 if quick else 5_000,
        "random_failures": 300 if quick else 5_000,
        "provider_down": (300, 8.0) if quick else (5_000, 180.0),
    }
    drills: dict[str, Callable[[Path], Result]] = {
        "worker_kills": lambda d: drill_worker_kills(d, *sizes["worker_kills"]),
        "redis_kill": lambda d: drill_redis_kill(d, sizes["redis_kill"]),
        "random_failures": lambda d: drill_random_failures(d, sizes["random_failures"]),
        "provider_down": lambda d: drill_provider_down(d, *sizes["provider_down"]),
    }
    results = []
    for name, drill in drills.items():
        if only and name != only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as tmp:
            started = time.monotonic()
            result = drill(Path(tmp))
            result.notes.append(f"took {time.monotonic() - started:.0f} s")
        print(result.show(), flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    parser.add_argument("--drill", choices=["worker_kills", "redis_kill", "random_failures",
                                            "provider_down"])  # fmt: skip
    args = parser.parse_args(argv)
    # The drill's own accepts log every number; the figures are what this prints.
    logs.configure("auto", level=logging.WARNING)
    results = run(args.quick, args.drill)
    return 1 if any(r.lost or r.stale or r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
