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
import contextlib
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

import psutil
import redis

from config import load_settings
from tests.fakes.base import Answer, FakeProvider
from tests.fakes.providers import env_for, make_fake, preload
from tests.fakes.providers import listed as listed_at
from tests.fakes.server import Handler, LoopbackServer, client_port, client_waiting
from worker.ops.reconcile import reconcile
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, StoreUnavailableError, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime import logs
from worker.runtime.celery_app import celery_dispatcher
from worker.runtime.embedded import EmbeddedRedis
from worker.runtime.redis_clients import redis_client
from worker.runtime.wiring import build_context

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

    def __init__(
        self,
        stack: ExitStack,
        redis_url: str,
        workdir: Path,
        providers: tuple[str, ...] = PROVIDERS,
        wrap: Callable[[FakeProvider], Handler] | None = None,
        **env: str,
    ) -> None:
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
            "OPTOUT_PROVIDER_LIMITS": ",".join(f"{p}=0/8" for p in providers),
        }
        for name in providers:
            fake = make_fake(name)
            server = stack.enter_context(LoopbackServer(wrap(fake) if wrap else fake.handle))
            self.fakes[name] = fake
            self.env.update(env_for(name, server.url))
        self.env.update(env)
        self.workers: list[subprocess.Popen[bytes]] = []
        stack.callback(self.close)
        self.ctx = build_context(
            load_settings(self.env), dispatcher=celery_dispatcher(load_settings(self.env))
        )

    def start_worker(
        self, beat: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker (`optout worker`: its groups in one process group) with the lab's
        settings, or with `env` instead (another target set)."""
        args = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "2"]
        if beat:
            args.append("--beat")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            args,
            env={**os.environ, **(self.env if env is None else env)},
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

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """A warm shutdown (SIGTERM), as a deploy does."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(process)

    def env_without(self, *prefixes: str, **extra: str) -> dict[str, str]:
        """The lab's settings with some variables left out (a provider's credentials, say)
        and others set: what another process of the deployment runs with."""
        kept = {k: v for k, v in self.env.items() if not k.startswith(prefixes)}
        return {**kept, **extra}

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
            client = redis_client(load_settings(self.env))
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        except redis.RedisError:
            pass

    def targets(self) -> list[str]:
        return sorted(self.ctx.targets())

    def listed(self, target: str) -> set[str]:
        return listed_at(self.fakes[target.split(":", 1)[0]], target)

    def settled(self) -> bool:
        counts = self.ctx.store.counts(self.ctx.known_targets())
        busy = any(any(c.values()) for c in counts.values())
        return not busy and not self.ctx.store.retry_counts()

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                time.sleep(1.0)  # and stays so (nothing re-staged by a late completion)
                if self.settled():
                    return True
            time.sleep(0.3)
        return False

    def compare(
        self, result: Result, numbers: list[str], targets: list[str] | None = None
    ) -> Result:
        """Each number at each target: delivered (provider state = ledger), dead-lettered,
        lost (ledger blocks, provider lacks it) or stale (provider blocks, ledger does not)."""
        dead = {(d["target"], d["phone"]) for d in self.ctx.store.dead_letters()}
        result.dead_lettered = len(dead)
        for target in targets or self.targets():
            held = self.listed(target)
            for n in numbers:
                blocked = self.ctx.store.ledger(n).get("s") == "blocked"
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


def accept_all(ctx: Context, events: list[Event], result: Result) -> None:
    for event in events:
        while True:
            try:
                accept(ctx, event)
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
        feeder = threading.Thread(target=accept_all, args=(lab.ctx, events, result))
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
                        accept(lab.ctx, event)
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
        missing = [n for n in acknowledged if lab.ctx.store.ledger(n).get("s") != "blocked"]
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
    """30% 5xx, 10% timeouts, bursts of 429 (outages: they hold the provider, spend no
    attempt), and numbers that fail on their own: a tenth a few times each, one in fifty
    for good until the fakes heal. Everything delivered or dead-lettered with a reason;
    after the fakes heal and a replay, everything delivered."""
    result = Result("providers failing at random")
    rng = random.Random(3)
    lock = threading.Lock()
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, OPTOUT_MAX_ATTEMPTS="4")
        phones = [f"+97257{i:07d}" for i in range(numbers)]
        for fake in lab.fakes.values():
            fake.chaos = _random_failures(rng, lock)
            for n in phones:
                roll = rng.random()
                if roll < 0.02:
                    fake.permanent.add(n[1:])
                elif roll < 0.12:
                    fake.flaky[n[1:]] = rng.randint(1, 5)
        lab.start_worker(beat=True)
        lab.start_worker()
        for start in range(0, numbers, 50):
            batch = [PhoneInput(p) for p in phones[start : start + 50]]
            accept(lab.ctx, Event("drill", Action.ADD, batch))
            result.accepted += 1
        lab.wait_settled(240)
        dead = lab.ctx.store.dead_letters()
        result.notes.append(
            f"injected failures: {sum(f.injected for f in lab.fakes.values())}; dead letters "
            f"before replay: {len(dead)} (all with a reason: {all(d.get('reason') for d in dead)})"
        )
        for fake in lab.fakes.values():
            fake.chaos = None
            fake.permanent.clear()
            fake.flaky.clear()
        work.replay(lab.ctx, [d["id"] for d in dead], "drill")
        if not lab.wait_settled(120):
            result.problems.append("did not settle after replay")
        return lab.compare(result, phones)


def drill_provider_down(workdir: Path, numbers: int, down_seconds: float) -> Result:
    """A provider down for a while: nothing lost, nothing dead-lettered although the
    outage outlasts every number's attempts many times over (an outage holds the provider,
    it spends no attempt), the backlog drains when it returns, and the request rate while
    it is down stays bounded (the circuit's probes, not a hot loop). Timings are compressed
    tenfold: a retry base of 0.2 s (2 s by default), so 180 s here is the issue's 30-minute
    outage."""
    result = Result("provider down")
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, OPTOUT_MAX_ATTEMPTS="3", OPTOUT_RETRY_MAX_SECONDS="5")
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
            accept(lab.ctx, Event("drill", Action.ADD, batch))
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


def flipping_events(numbers: list[str], flips: int, rng: random.Random) -> list[list[Event]]:
    """Rounds of events: in round k every number flips (add, remove, add, ...; each number
    starts at a random point), each event later than the number's one before, so every
    round changes the ledger while the pushes of the round before may still be out."""
    base = datetime.now(UTC) - timedelta(hours=1)
    start = {n: rng.random() < 0.5 for n in numbers}
    rounds = []
    for k in range(flips):
        events = []
        for n in numbers:
            add = start[n] == (k % 2 == 0)
            events.append(Event("drill", Action.ADD if add else Action.REMOVE, [PhoneInput(n)],
                                occurred_at=base + timedelta(seconds=k)))  # fmt: skip
        rng.shuffle(events)
        rounds.append(events)
    return rounds


class Staller:
    """Stalls worker processes (SIGSTOP of the whole `optout worker` process group, as a
    long GC or VM pause does) while they wait for a request, for longer than their lease."""

    def __init__(self, victims: list[subprocess.Popen[bytes]]) -> None:
        self.victims = victims
        self.lock = threading.Lock()
        self.frozen: set[int] = set()
        self.stalls = 0

    def sender(self, port: int) -> subprocess.Popen[bytes] | None:
        """The victim whose process tree owns the client end at local port `port`."""
        for victim in self.victims:
            try:
                root = psutil.Process(victim.pid)
                for proc in [root, *root.children(recursive=True)]:
                    if any(c.laddr and c.laddr.port == port
                           for c in proc.net_connections(kind="tcp")):  # fmt: skip
                        return victim
            except psutil.Error:
                continue
        return None

    def stall(self, port: int | None, seconds: float) -> bool:
        """Stall the sender of the request at `port` for `seconds`, unless it is not a
        victim or is stalled already; answers whether it now is."""
        victim = self.sender(port) if port else None
        if victim is None or victim.poll() is not None:
            return False
        with self.lock:
            if victim.pid in self.frozen:
                return False
            self.frozen.add(victim.pid)
            self.stalls += 1
        os.killpg(victim.pid, signal.SIGSTOP)

        def thaw() -> None:
            time.sleep(seconds)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGCONT)
            with self.lock:
                self.frozen.discard(victim.pid)

        threading.Thread(target=thaw, daemon=True).start()
        return True

    def thaw_all(self) -> None:
        for victim in self.victims:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGCONT)


class SlowProvider:
    """A fake in front of which some requests are slow: the worker that sent one stalls
    (see Staller) while the provider holds the request for seconds, past the chunk's lease,
    then applies it and answers; meanwhile the chunk is recovered and another worker pushes
    the number's newer state, which the provider may apply first (`overtaken` counts
    those). Other requests are applied after a short wait, and some answered after the
    client's timeout (applied, but a failure for the worker). A request whose client hung
    up before it was applied is dropped, as by a provider that aborts on disconnect."""

    def __init__(
        self, fake: FakeProvider, rng: random.Random, lock: threading.Lock, staller: Staller
    ) -> None:
        self.fake = fake
        self.rng = rng
        self.lock = lock  # shared by the drill's fakes: their random draws and counters
        self.staller = staller
        self.arrivals = 0
        self.applied: dict[str, int] = {}  # digits -> latest arrival applied
        self.overtaken = 0
        self.dropped = 0

    def __call__(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
        body: object,
    ) -> Answer:  # fmt: skip
        with self.lock:
            self.arrivals += 1
            arrival = self.arrivals
            slow = self.rng.random() < 0.08
            hold = self.rng.uniform(2.5, 5.0)
            extra = self.rng.uniform(0.3, 2.0)
            wait = self.rng.uniform(0.0, 0.2)
            answer_after = self.rng.uniform(0.9, 1.5) if self.rng.random() < 0.05 else 0.0
        if slow and self.staller.stall(client_port(), hold + extra):
            wait = hold
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and client_waiting():
            time.sleep(0.02)
        if not client_waiting():
            with self.lock:
                self.dropped += 1
            return 503, {"error": "client gone"}, {}
        with self.lock:
            before = len(self.fake.requests)
            answer = self.fake.handle(method, path, query, headers, body)
            for kind, _, numbers in self.fake.requests[before:]:
                if kind == "LOOKUP":
                    continue  # a read changes nothing
                for n in numbers:
                    if self.applied.get(n, 0) > arrival:
                        self.overtaken += 1
                    self.applied[n] = max(self.applied.get(n, 0), arrival)
        time.sleep(answer_after)
        return answer


def drill_slow_provider(workdir: Path, numbers: int, flips: int) -> Result:
    """Requests applied and answered seconds late, past their chunk's lease, while numbers
    flip between add and remove: workers stall with requests out, their leases run out,
    other workers push the newer state, and the stalled requests land after it. A bulk
    provider and a per-number one (lookup, then delete by id)."""
    result = Result("slow provider, pushes outliving their lease")
    rng = random.Random(7)
    lock = threading.Lock()
    staller = Staller([])
    slow: list[SlowProvider] = []

    def wrap(fake: FakeProvider) -> Handler:
        slow.append(SlowProvider(fake, rng, lock, staller))
        return slow[-1]

    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, providers=("voicenter", "voodoosms"), wrap=wrap,
                  OPTOUT_LEASE_SECONDS="2", OPTOUT_HTTP_TIMEOUT_SECONDS="1",
                  OPTOUT_RECOVER_INTERVAL_SECONDS="0.3", OPTOUT_BATCH_LINGER_MS="100",
                  OPTOUT_PROVIDER_LIMITS="voicenter=0/8,voodoosms=0/16")  # fmt: skip
        lab.start_worker(beat=True)  # never stalled: its beat recovers the others' leases
        staller.victims += [lab.start_worker(), lab.start_worker()]
        stack.callback(staller.thaw_all)
        phones = [f"+97254{i:07d}" for i in range(numbers)]
        for events in flipping_events(phones, flips, rng):
            accept_all(lab.ctx, events, result)
            time.sleep(rng.uniform(0.2, 1.5))  # some of this round's pushes get out
        if not lab.wait_settled(240):
            result.problems.append("did not settle in 240 s")
        log = (workdir / "workers.log").read_text(errors="replace")
        result.notes.append(
            f"stalls: {staller.stalls}; chunks recovered: {log.count('chunk_recovered')}; "
            f"requests applied after a newer one: {sum(s.overtaken for s in slow)}; dropped "
            f"when their client had gone: {sum(s.dropped for s in slow)}"
        )
        return lab.compare(result, phones)


def drill_reconcile_during_accepts(workdir: Path, numbers: int, flips: int) -> Result:
    """`optout reconcile --remove-extras`, again and again, while opt-outs and removes of
    the same numbers stream in; someone else's numbers are on the lists (extras to remove)
    and some of ours were deleted behind our back (missing, to push again)."""
    result = Result("reconcile --remove-extras during accepts")
    rng = random.Random(11)

    def slow_listing(fake: FakeProvider) -> Handler:
        # A list read takes a while (a long list, a slow API): opt-outs accepted after
        # reconcile read the ledger reach the provider before it reads the list, so they
        # are on the list but not in the ledger it read: extras that must not be removed.
        def handle(method: str, path: str, query: dict[str, list[str]],
                   headers: dict[str, str], body: object) -> Answer:  # fmt: skip
            if method == "GET":
                time.sleep(0.6)
            return fake.handle(method, path, query, headers, body)

        return handle

    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, providers=("voicenter", "phonely"), wrap=slow_listing,
                  OPTOUT_BATCH_LINGER_MS="100")  # fmt: skip
        for fake in lab.fakes.values():
            fake.delay = 0.02
        lab.start_worker(beat=True)
        phones = [f"+97253{i:07d}" for i in range(numbers)]
        foreign = [f"+97252{i:07d}" for i in range(numbers // 10 or 1)]
        phonely = lab.fakes["phonely"]
        for target in ("phonely:agent-a", "phonely:agent-b"):
            for n in foreign:
                preload(phonely, target, n[1:])
        stop = threading.Event()
        runs = {"n": 0, "kept": 0, "removing": 0}

        def reconcile_again_and_again() -> None:
            while not stop.is_set():
                with phonely.lock:  # someone deletes some of ours behind our back
                    held = sorted(phonely.listed("agent-a") & {p[1:] for p in phones})
                    for d in rng.sample(held, min(3, len(held))):
                        phonely.listed("agent-a").discard(d)
                for report in reconcile(lab.ctx, "phonely", remove_extras=True, who="drill"):
                    runs["kept"] += report.kept
                    runs["removing"] += report.removing
                runs["n"] += 1

        reconciler = threading.Thread(target=reconcile_again_and_again)
        reconciler.start()
        try:
            for k, events in enumerate(flipping_events(phones, flips, rng)):
                if k:
                    time.sleep(rng.uniform(0.3, 1.5))
                accept_all(lab.ctx, events, result)
        finally:
            # At once: the run under way when the last round came in is the last one, so
            # nothing after it could repair what it got wrong.
            stop.set()
            reconciler.join()
        if not lab.wait_settled(180):
            result.problems.append("did not settle in 180 s")
        left = [n for n in foreign for t in ("agent-a", "agent-b") if n[1:] in phonely.listed(t)]
        if left:
            result.problems.append(f"extras never removed: {len(left)}")
        result.notes.append(
            f"reconcile runs: {runs['n']}; extras staged for removal: {runs['removing']}; "
            f"extras kept because the ledger blocked them by then: {runs['kept']}"
        )
        return lab.compare(result, phones)


def drill_two_target_sets(workdir: Path, numbers: int, ttl: float) -> Result:
    """Processes with different provider settings: an API process on old settings (no
    Phonely) accepts beside processes that have it (a rolling deploy), a third Phonely agent
    is added while it accepts, then Phonely's credentials are removed from every process
    for longer than the target TTL while opt-outs go on, and restored."""
    result = Result("two target sets: a rolling deploy, a provider away and back")
    rng = random.Random(13)
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, providers=("voicenter", "phonely"),
                  OPTOUT_TARGET_TTL_SECONDS=str(ttl))  # fmt: skip

        def process(env: dict[str, str]) -> Context:
            settings = load_settings(env)
            return build_context(settings, dispatcher=celery_dispatcher(settings))

        old_api = process(lab.env_without("PHONELY_"))  # never has Phonely
        phones = [f"+97251{i:07d}" for i in range(numbers)]
        stream = iter(flipping_events(phones, 6, rng))

        def accept_round(new_api: Context) -> None:
            # Every other event through the process on old settings.
            for i, event in enumerate(next(stream)):
                accept_all(old_api if i % 2 else new_api, [event], result)

        worker = lab.start_worker(beat=True)
        accept_round(lab.ctx)
        # A rolling deploy adds agent-c: the new processes announce it, the old API goes on.
        lab.env["PHONELY_AGENT_IDS"] = "agent-a,agent-b,agent-c"
        lab.stop(worker)
        worker = lab.start_worker(beat=True)
        accept_round(process(lab.env))
        # Phonely's credentials are removed everywhere for longer than the targets' TTL,
        # while opt-outs and removes go on.
        lab.stop(worker)
        away = lab.env_without("PHONELY_")
        worker = lab.start_worker(beat=True, env=away)
        accept_round(process(away))
        time.sleep(ttl + 2)
        accept_round(process(away))
        live = set(lab.ctx.store.directory())
        result.notes.append(f"live while away: {', '.join(sorted(live))}")
        if any(t.startswith("phonely") for t in live):
            result.problems.append("Phonely's targets were still live while it was away")
        accept_round(process(away))
        lab.stop(worker)
        # And restored: the agents come back and are caught up.
        lab.start_worker(beat=True)
        lab.ctx = process(lab.env)
        accept_round(lab.ctx)
        targets = ["voicenter", "phonely:agent-a", "phonely:agent-b", "phonely:agent-c"]
        if not lab.wait_settled(120):
            result.problems.append("did not settle in 120 s")
        result.notes.append(f"targets compared: {', '.join(targets)}")
        return lab.compare(result, phones, targets)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnPostgres:
    """A PostgreSQL of the drill's own (initdb in a temporary directory, a free port, trust
    auth), run as the `postgres` user when the drill runs as root: PostgreSQL refuses root."""

    def __init__(self, workdir: Path) -> None:
        from worker.runtime.embedded import free_port

        self.dir = workdir / "pg"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/optout"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def init(self) -> OwnPostgres:
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.dir.parent, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                  "-U", "postgres", "--no-sync")  # fmt: skip
        self.start()
        import psycopg

        admin = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE optout")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options,
                  "-l", str(self.dir / "log"), "-w", "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w",
                  "stop")  # fmt: skip

    def missing(self) -> str | None:
        """Why this machine cannot run one, or None."""
        if not (PG_BIN / "initdb").exists():
            return f"no PostgreSQL binaries in {PG_BIN}"
        return None


def drill_archive_down(workdir: Path, numbers: int, down_seconds: float) -> Result:
    """The audit archive's PostgreSQL stopped (`pg_ctl stop -m immediate`) while opt-outs
    stream in, then started again: accepts go on, entries wait in Redis, the lag drains, and
    every audit entry of every number is archived exactly once (an accept and Voicenter's
    answer each: the provider never fails here)."""
    result = Result("archive database down")
    pg = OwnPostgres(workdir)
    if (why := pg.missing()) is not None:
        result.notes.append(f"skipped: {why}")
        result.accepted = result.delivered = 1
        return result
    pg.init()
    with ExitStack() as stack:
        stack.callback(_quietly, pg.stop, "fast")
        url, _ = stack.enter_context(redis_for_drill(workdir))
        lab = Lab(stack, url, workdir, providers=("voicenter",), OPTOUT_ARCHIVE_URL=pg.url,
                  OPTOUT_ARCHIVE_INTERVAL_SECONDS="0.3")  # fmt: skip
        lab.start_worker(beat=True)
        phones = [f"+97259{i:07d}" for i in range(numbers)]
        stream = lab.ctx.store
        peak = {"entries": 0, "lag": 0.0}

        def watch() -> None:
            while not done.is_set():
                with contextlib.suppress(redis.RedisError):
                    backlog = stream.audit_backlog()
                    lag = (stream.now_ms() - backlog.oldest_ms) / 1000 if backlog.oldest_ms else 0
                    peak["entries"] = max(peak["entries"], backlog.entries)
                    peak["lag"] = max(peak["lag"], lag)
                time.sleep(0.2)

        done = threading.Event()
        watcher = threading.Thread(target=watch)
        watcher.start()
        per_event = 10
        third = len(phones) // (3 * per_event)
        for k, start in enumerate(range(0, len(phones), per_event)):
            if k == third:
                pg.stop("immediate")
                stopped = time.monotonic()
            if k == 2 * third:
                time.sleep(max(0.0, down_seconds - (time.monotonic() - stopped)))
                pg.start()
                restarted = time.monotonic()
            batch = [PhoneInput(p) for p in phones[start : start + per_event]]
            accept_all(lab.ctx, [Event("drill", Action.ADD, batch)], result)
            time.sleep(0.02)  # a steady stream, not one burst
        if not lab.wait_settled(120):
            result.problems.append("did not settle in 120 s")
        deadline = time.monotonic() + 120
        while stream.audit_backlog().entries and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = time.monotonic() - restarted
        done.set()
        watcher.join()
        left = stream.audit_backlog().entries
        if left:
            result.problems.append(f"{left} entries still wait in Redis after 120 s")
        result.notes.append(
            f"archive down {down_seconds:.0f} s: backlog peaked at {peak['entries']} entries, "
            f"lag at {peak['lag']:.1f} s; drained {drained:.1f} s after PostgreSQL returned"
        )
        _check_archived_once(lab, phones, result)
        return lab.compare(result, phones)


def _quietly(stop: Callable[[str], None], mode: str) -> None:
    with contextlib.suppress(Exception):
        stop(mode)


def _check_archived_once(lab: Lab, phones: list[str], result: Result) -> None:
    """Each number's entries in the archive: its accept and Voicenter's answer, once each."""
    from worker.archive.database import Archive

    archive = Archive(lab.env["OPTOUT_ARCHIVE_URL"])
    try:
        wrong = 0
        for n in phones:
            entries = [e for e in archive.between(None, None, n)]
            kinds = sorted("answer" if e.raw.get("prov") else "accept" for e in entries)
            if kinds != ["accept", "answer"] or any("~" in e.entry_id for e in entries):
                wrong += 1
        tails = [k for k in lab.ctx.store.redis.scan_iter(match=lab.prefix + "audit:+*")]
        result.notes.append(f"numbers whose archived trail is not exactly accept + answer: "
                            f"{wrong}; audit tails left in Redis: {len(tails)}")  # fmt: skip
        result.lost += wrong
        if tails:
            result.problems.append(f"{len(tails)} audit tails left in Redis")
    finally:
        archive.close()


DRILLS = ["worker_kills", "redis_kill", "random_failures", "provider_down", "slow_provider",
          "reconcile_during_accepts", "two_target_sets", "archive_down", "sentinel_failover",
          "sentinel_failover_rabbitmq"]  # fmt: skip


def _failover(workdir: Path, numbers: int, rabbitmq: bool) -> Result:
    from tests.chaos.failover import drill_sentinel_failover  # it builds on this module

    return drill_sentinel_failover(workdir, numbers, rabbitmq)


def run(quick: bool, only: str | None = None) -> list[Result]:
    sizes = {
        "worker_kills": (300, 4) if quick else (10_000, 10),
        "redis_kill": 400 if quick else 5_000,
        "random_failures": 300 if quick else 5_000,
        "provider_down": (300, 8.0) if quick else (5_000, 180.0),
        "slow_provider": (60, 12) if quick else (1_000, 30),
        "reconcile_during_accepts": (100, 6) if quick else (2_000, 10),
        "two_target_sets": (100, 10.0) if quick else (2_000, 30.0),
        "archive_down": (400, 5.0) if quick else (20_000, 60.0),
        "sentinel_failover": 300 if quick else 3_000,
    }
    drills: dict[str, Callable[[Path], Result]] = {
        "worker_kills": lambda d: drill_worker_kills(d, *sizes["worker_kills"]),
        "redis_kill": lambda d: drill_redis_kill(d, sizes["redis_kill"]),
        "random_failures": lambda d: drill_random_failures(d, sizes["random_failures"]),
        "provider_down": lambda d: drill_provider_down(d, *sizes["provider_down"]),
        "slow_provider": lambda d: drill_slow_provider(d, *sizes["slow_provider"]),
        "reconcile_during_accepts": lambda d: drill_reconcile_during_accepts(
            d, *sizes["reconcile_during_accepts"]
        ),
        "two_target_sets": lambda d: drill_two_target_sets(d, *sizes["two_target_sets"]),
        "archive_down": lambda d: drill_archive_down(d, *sizes["archive_down"]),
        "sentinel_failover": lambda d: _failover(d, sizes["sentinel_failover"], False),
        "sentinel_failover_rabbitmq": lambda d: _failover(d, sizes["sentinel_failover"], True),
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
    parser.add_argument("--drill", choices=DRILLS)
    args = parser.parse_args(argv)
    # The drill's own accepts log every number; the figures are what this prints.
    logs.configure("auto", level=logging.WARNING)
    results = run(args.quick, args.drill)
    return 1 if any(r.lost or r.stale or r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
