"""Issue 16's bulk speed, from outside, in the README's one-machine production shape.

    python -m tests.perf.shape                 # 50,000 numbers; wrk 10 s over 64 connections
    python -m tests.perf.shape --numbers 2000 --seconds 1

One deployment, started as the README starts it: `optout api --workers 2`, one `optout
worker` (its default 2 processes, no `--beat`) and one `optout beat`, each its own process,
on the bench's own embedded Redis (AOF `appendfsync always`), with a fake Voicenter on
loopback HTTP and provider rate limits lifted (tests/perf/bench.py `stack()`). On it, one
after the other:

- bulk: `--numbers` numbers as 1,000-number `POST /v1/optouts` requests, 4 in flight
  (tests/perf/load.py), timed from the first request until the fake holds every number;
- events: `wrk` for `--seconds` over `--connections` connections, one number per `POST
  /v1/optouts`, each request a number of its own (a counter per wrk thread, the thread in
  the number). Two figures: the rate wrk saw answered 2xx, and the rate end to end, from
  wrk's start until the fake holds as many of wrk's numbers as were answered 2xx;
- no-op: `wrk` as above against `GET /healthz` of the same API (no I/O): the accepts ratio
  is the events' 2xx rate over the no-op's.

Events and no-op run `--rounds` times, alternated (each round's events numbers of their
own), and the table shows the round whose accepts ratio is the median: one 10 s pair moved
by 0.1 either way between runs of the same code (the machine, and how wrk's connections
fell to the two API processes, which the report counts). Every round is listed below it.

The baseline (tests/perf/baseline.py: one Celery task and one HTTP request per number,
prefork `-c 2`) runs on the same Redis before and after, and the ratios are against the
mean of its two runs. Figures, ratios and issue 16's goals (bulk >= 25x the baseline, events
>= 4x, accepts >= 0.5 of the no-op) are printed, never asserted. Needs `wrk` on PATH
(Debian: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from config.settings import Settings
from tests.fakes.providers import listed
from tests.perf import servers
from tests.perf.bench import (
    TOKEN,
    Bench,
    Figure,
    Stack,
    baseline,
    digits,
    feed_http,
    machine,
    process_tree,
    stack,
    wait,
)
from tests.processes import CLI, ROOT
from worker.runtime.embedded import EmbeddedRedis

WIDTH = 80
API_WORKERS = 2
CONCURRENCY = 2  # the baseline's processes (issue 16: prefork -c 2)
#: `optout worker`'s main group as it starts with no option: OPTOUT_WORKER_CONCURRENCY's default.
WORKER_PROCESSES = int(Settings.model_fields["worker_concurrency"].default)
PER_REQUEST = 1000  # bulk numbers a request
#: Numbers are `+97259` and 7 digits: each wrk thread counts in a block of its own.
THREAD_BLOCK = 1_000_000
NUMBER_SPACE = 10_000_000
GOALS = {"bulk": 25.0, "events": 4.0, "accepts": 0.5}
#: Events and no-op runs, alternated: the accepts ratio of one pair moved by 0.1 between runs.
ROUNDS = 3

#: Every wrk run: each thread counts its answers, 2xx or not, and `done()` prints one JSON
#: line with those, wrk's own error counts and what each thread generated.
COUNTS_LUA = """
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

sent, ok, other = 0, 0, 0

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local sent, ok, other = {}, 0, 0
  for _, t in ipairs(threads) do
    table.insert(sent, string.format("%d", t:get("sent")))
    ok = ok + t:get("ok")
    other = other + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    '{"duration_us":%d,"requests":%d,"ok":%d,"other":%d,"sent":[%s],'
    .. '"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.duration, summary.requests, ok, other, table.concat(sent, ","),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

#: Events: request k of thread t opts out number `first + t * block + k`.
OPTOUTS_LUA = """
local first, block, token = 0, 0, ""

function init(args)
  first, block, token = tonumber(args[1]), tonumber(args[2]), args[3]
end

function request()
  local i = first + id * block + sent
  sent = sent + 1
  return wrk.format("POST", "/v1/optouts",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token},
    string.format('{"action":"add","phones":["+97259%07d"]}', i))
end
"""


@dataclass
class Wrk:
    """What one wrk run saw."""

    seconds: float
    ok: int  # answered 2xx
    other: int  # answered otherwise
    errors: int  # connect, read, write errors and timeouts
    p99_ms: float
    cpu: float  # wrk's own CPU seconds
    sent: list[int] = field(default_factory=list)  # requests each thread made
    #: wrk's connections each API process held, a second in (most first): all on one
    #: process halves what two can answer.
    spread: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def wrk(url: str, script: str, logs: Path, name: str, seconds: float, connections: int,
        *args: str, servers: Callable[[], list[int]] | None = None) -> Wrk:  # fmt: skip
    """`servers`: what `spread` counts, looked at a second into the run (or halfway)."""
    path = logs / f"{name}.lua"
    path.write_text(script)
    threads = min(connections, os.cpu_count() or 1)
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", "30s", "-s", str(path), url, *(["--", *args] if args else [])]  # fmt: skip
    spread: list[int] = []
    look = threading.Timer(
        min(1.0, seconds / 2), lambda: spread.extend(servers() if servers else [])
    )
    look.start()
    cpu = _children_cpu()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    cpu = _children_cpu() - cpu
    look.cancel()
    look.join()
    (logs / f"{name}.out").write_text(out.stdout + out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {(out.stdout + out.stderr)[-2000:]}")
    got: dict[str, Any] = json.loads(lines[-1])
    errors = sum(got[k] for k in ("connect", "read", "write", "timeout"))
    return Wrk(got["duration_us"] / 1e6, got["ok"], got["other"], errors,
               got["p99_us"] / 1000, cpu, got["sent"], spread)  # fmt: skip


def api_connections(s: Stack) -> Callable[[], list[int]]:
    """The established connections on the API's port each of its server processes holds
    (those holding its listening socket, the supervisor aside), most first: from /proc,
    empty where there is none to read."""
    port = int(s.url.rsplit(":", 1)[1])
    root = s.procs.running["api"].pid

    def count() -> list[int]:
        listening, established = _sockets(port)
        held: list[int] = []
        for pid in process_tree(root):
            inodes = _socket_inodes(pid)
            if pid != root and inodes & listening:
                held.append(len(inodes & established))
        return sorted(held, reverse=True)

    return count


def _sockets(port: int) -> tuple[set[int], set[int]]:
    """Inodes of the TCP sockets on local `port`: listening, and established."""
    listening: set[int] = set()
    established: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            state, inode = fields[3], int(fields[9])
            if state == "0A":
                listening.add(inode)
            elif state == "01":
                established.add(inode)
    return listening, established


def _socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _children_cpu() -> float:
    """CPU seconds of this process's children it has waited for (wrk, once it has run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the measured paths ------------------------------------------------------------------


@dataclass
class Phase:
    """One path on the deployment: its figure and the CPU each part spent on it."""

    figure: Figure
    cpu: dict[str, float]
    #: The bulk's: seconds until the API had answered every request, and how many numbers
    #: the fake held by then.
    split: tuple[float, int] | None = None


def cpu_meter(s: Stack, bench: Bench) -> Callable[[], dict[str, float]]:
    """CPU seconds each part of the deployment spends from now until the answer is called."""

    def now() -> dict[str, float]:
        parts = {name: s.procs.cpu_seconds(name) for name in ("api", "worker", "beat")}
        return {**parts, "redis": bench.redis_cpu()}

    before = now()
    return lambda: {name: spent - before[name] for name, spent in now().items()}


def settle(s: Stack, bench: Bench) -> float:
    """Wait until the work a phase left behind is done (its audit entries archived, an AOF
    rewrite it set off finished, every chunk completed), so the next phase is measured on
    its own work: the bulk's 100,000 audit entries drained beside the events made them
    pay for it. Seconds waited."""
    client = redis.Redis.from_url(bench.redis_url)
    prefix = s.procs.env["OPTOUT_KEY_PREFIX"]
    started = time.monotonic()

    def quiet() -> bool:
        busy = client.info("persistence")
        return (
            client.xlen(prefix + "audit:log") == 0
            and client.xlen(prefix + "audit:batches") == 0
            and client.zcard(prefix + "leases") == 0
            and not busy["aof_rewrite_in_progress"]
            and not busy["aof_rewrite_scheduled"]
        )

    if not wait(quiet, 600, every=0.2):
        raise RuntimeError("the deployment did not settle between phases")
    return time.monotonic() - started


def bulk(s: Stack, bench: Bench, count: int) -> Phase:
    spent = cpu_meter(s, bench)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    fake = s.fakes["voicenter"]

    def sample() -> None:
        # How many numbers the fake held when: the push rate while the API still accepted
        # and after it had answered every request.
        while not stop.wait(0.05):
            with fake.lock:
                samples.append((time.monotonic(), len(listed(fake, "voicenter"))))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        started = feed_http("optouts", PER_REQUEST)(s, 0, count)
        if not wait(lambda: s.holds(0, count), 3600, every=0.05):
            raise RuntimeError("bulk: not every number arrived")
    finally:
        stop.set()
        sampler.join()
    seconds = time.monotonic() - started
    cpu = spent()
    figure = Figure("bulk", count, seconds, s.provider_requests(), load_cpu=s.load_cpu)
    accepted = s.load_seconds or seconds
    held = max((n for t, n in samples if t <= started + accepted), default=0)
    return Phase(figure, cpu, (accepted, held))


def events(s: Stack, bench: Bench, first: int, seconds: float, connections: int,
           name: str = "wrk-events") -> tuple[Wrk, Phase, int]:  # fmt: skip
    """wrk's figures, the end-to-end phase (as many of wrk's numbers at the fake as it saw
    answered 2xx), and how many of wrk's numbers the fake held in the end."""
    spent = cpu_meter(s, bench)
    before = sum(s.provider_requests().values())
    started = time.monotonic()
    seen = wrk(s.url + "/v1/optouts", COUNTS_LUA + OPTOUTS_LUA, s.procs.logs, name, seconds,
               connections, str(first), str(THREAD_BLOCK), TOKEN,
               servers=api_connections(s))  # fmt: skip
    # wrk makes one request before the run to check the script (thread 0's first number):
    # it is in `sent` but never reaches the server, which is harmless here.
    sent = {digits(first + t * THREAD_BLOCK + k) for t, n in enumerate(seen.sent)
            for k in range(n)}  # fmt: skip
    fake = s.fakes["voicenter"]

    def held() -> int:
        with fake.lock:
            return len(sent & listed(fake, "voicenter"))

    if not wait(lambda: held() >= seen.ok, 3600, every=0.05):
        raise RuntimeError("events: not every accepted number arrived")
    end_to_end = time.monotonic() - started
    cpu = spent()
    # Requests in flight when wrk stopped may have been accepted too: let them land.
    time.sleep(2)
    requests = {"voicenter": s.provider_requests()["voicenter"] - before}
    figure = Figure("events", seen.ok, end_to_end, requests)
    return seen, Phase(figure, cpu), held()


def noop(s: Stack, seconds: float, connections: int, name: str = "wrk-noop") -> Wrk:
    return wrk(s.url + "/healthz", COUNTS_LUA, s.procs.logs, name, seconds, connections,
               servers=api_connections(s))  # fmt: skip


@dataclass
class Round:
    """One events run and the no-op run after it."""

    wrk_events: Wrk
    events: Phase
    held: int  # wrk's numbers the fake held in the end
    wrk_noop: Wrk
    settled: float  # seconds waited after the events

    @property
    def accepts(self) -> float:
        return self.wrk_events.rate / self.wrk_noop.rate


def median_round(rounds: list[Round]) -> Round:
    """The round whose accepts ratio is the median (the lower of the two middle ones)."""
    return sorted(rounds, key=lambda r: r.accepts)[(len(rounds) - 1) // 2]


# -- report ------------------------------------------------------------------------------


@dataclass
class Report:
    numbers: int
    seconds: float
    connections: int
    bases: list[Figure]
    bulk: Phase
    rounds: list[Round]
    load: tuple[str, str] = ("", "")  # load averages at the start and the end
    code: str = ""
    settled: float = 0.0  # the wait after the bulk
    redis: str = "embedded Redis"  # servers.describe()
    worker_processes: int = WORKER_PROCESSES

    def lines(self) -> list[str]:
        mean = sum(b.rate for b in self.bases) / len(self.bases)
        bulk = self.bulk.figure.rate / mean
        shown = median_round(self.rounds)
        events = shown.events.figure.rate / mean
        accepts = shown.accepts
        head = f"{'':34}{'numbers':>9}{'seconds':>8}{'per s':>9}{'ratio':>7}{'goal':>6}{'met':>5}"
        rows = [head, "-" * len(head)]

        def row(label: str, count: int | None, seconds: float | None, rate: float | None,
                ratio: str = "", goal: str = "", met: bool | None = None) -> None:  # fmt: skip
            cells = (
                f"{label:34}{'' if count is None else f'{count:,}':>9}"
                f"{'' if seconds is None else f'{seconds:.1f}':>8}"
                f"{'' if rate is None else f'{rate:,.0f}':>9}{ratio:>7}{goal:>6}"
                f"{'' if met is None else ('yes' if met else 'no'):>5}"
            )
            rows.append(cells.rstrip())

        for label, base in zip(("start", "end"), self.bases, strict=False):
            row(f"baseline ({label})", base.count, base.seconds, base.rate)
        row("baseline: mean of the two", None, None, mean)
        row(f"bulk: {PER_REQUEST:,} a request, 4 in flight", self.bulk.figure.count,
            self.bulk.figure.seconds, self.bulk.figure.rate, f"{bulk:.1f}x",
            f"≥{GOALS['bulk']:g}x", bulk >= GOALS["bulk"])  # fmt: skip
        w = shown.wrk_events
        which = f" (round {self.rounds.index(shown) + 1})" if len(self.rounds) > 1 else ""
        row(f"events{which}: wrk, 2xx", w.ok, w.seconds, w.rate)
        row("events: end to end", shown.events.figure.count, shown.events.figure.seconds,
            shown.events.figure.rate, f"{events:.1f}x", f"≥{GOALS['events']:g}x",
            events >= GOALS["events"])  # fmt: skip
        n = shown.wrk_noop
        row("no-op: wrk GET /healthz, 2xx", n.ok, n.seconds, n.rate)
        label = "accepts: events 2xx / no-op" + (", median" if len(self.rounds) > 1 else "")
        row(label, None, None, None, f"{accepts:.2f}", f"≥{GOALS['accepts']:g}",
            accepts >= GOALS["accepts"])  # fmt: skip
        ok = sum(r.wrk_events.ok for r in self.rounds)
        notes = [
            f"events: {sum(sum(r.wrk_events.sent) for r in self.rounds):,} requests made by "
            f"wrk's threads, {ok:,} answered 2xx, "
            f"{sum(r.wrk_events.other for r in self.rounds):,} otherwise, "
            f"{sum(r.wrk_events.errors for r in self.rounds):,} socket errors or timeouts; "
            f"the fake holds {sum(r.held for r in self.rounds):,} of wrk's numbers (those in "
            "flight when wrk stopped count if they were accepted); p99 "
            f"{_ms(r.wrk_events.p99_ms for r in self.rounds)}. No-op: "
            f"{sum(r.wrk_noop.other for r in self.rounds):,} not 2xx, "
            f"{sum(r.wrk_noop.errors for r in self.rounds):,} socket errors; p99 "
            f"{_ms(r.wrk_noop.p99_ms for r in self.rounds)}.",
            f"CPU seconds, bulk: {_cpu(self.bulk.cpu)}, load generator "
            f"{self.bulk.figure.load_cpu or 0:.1f}; events (end to end{which.replace(' (', ', ')}: "
            f"{_cpu(shown.events.cpu)}, wrk {w.cpu:.1f}; no-op: wrk {n.cpu:.1f}.",
            *self._split(),
            f"Voicenter requests: bulk {self.bulk.figure.requests['voicenter']:,}, "
            f"events{which} {shown.events.figure.requests['voicenter']:,}.",
            f"Settled before the next phase (audit entries archived, no AOF rewrite, no "
            f"chunk leased): {self.settled:.1f} s after the bulk, "
            f"{_seconds(r.settled for r in self.rounds)} after the events.",
        ]
        out = [*self._header(), "", *rows, ""]
        for note in notes:
            out += textwrap.wrap(note, WIDTH)
        return [*out, "", *self._rounds()]

    def _rounds(self) -> list[str]:
        """Each round: rates, ratio, and wrk's connections per API process."""
        head = f"{'round':<6}{'events 2xx/s':>13}{'end to end/s':>13}{'no-op/s':>9}{'accepts':>8}"
        out = [head + "  connections per API process", "-" * WIDTH]
        for i, r in enumerate(self.rounds, 1):
            spread = (
                f"{_spread(r.wrk_events.spread)} (events), {_spread(r.wrk_noop.spread)} (no-op)"
            )
            out.append(
                f"{i:<6}{r.wrk_events.rate:>13,.0f}{r.events.figure.rate:>13,.0f}"
                f"{r.wrk_noop.rate:>9,.0f}{r.accepts:>8.2f}  {spread}"
            )
        return out

    def _split(self) -> list[str]:
        if self.bulk.split is None:
            return []
        accepted, held = self.bulk.split
        rest = self.bulk.figure.seconds - accepted
        after = (
            f"the other {self.bulk.figure.count - held:,} in the {rest:.1f} s after "
            f"({(self.bulk.figure.count - held) / rest:,.0f}/s)"
            if rest > 0
            else "none after"
        )
        return [
            f"Bulk: the API answered every request in {accepted:.1f} s "
            f"({self.bulk.figure.count / accepted:,.0f} numbers/s); the fake held "
            f"{held:,} by then ({held / accepted:,.0f}/s), {after}."
        ]

    def _header(self) -> list[str]:
        header = [
            f"Issue 16's bulk speed, one-machine production shape (code {self.code or '?'})",
            f"machine: {machine()}",
            f"load average at the start: {self.load[0]}; at the end: {self.load[1]}",
            f"optout api --workers {API_WORKERS}, optout worker ({self.worker_processes} "
            "processes), "
            f"optout beat; {self.redis}, AOF always; a fake Voicenter on loopback, limits "
            f"lifted. Bulk {self.numbers:,} numbers; wrk {self.seconds:g} s over "
            f"{self.connections} connections; baseline: a Celery task and a request per "
            f"number, prefork -c {CONCURRENCY}, before and after.",
        ]
        return [
            line for text in header for line in textwrap.wrap(text, WIDTH, break_on_hyphens=False)
        ]


def _spread(counts: list[int]) -> str:
    return "/".join(str(c) for c in counts) or "?"


def _ms(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) + " ms"


def _seconds(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) + " s"


def _cpu(parts: dict[str, float]) -> str:
    names = {"api": "API", "worker": "worker", "beat": "beat", "redis": "Redis"}
    return ", ".join(f"{names[k]} {v:.1f}" for k, v in parts.items())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _code() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=False)  # fmt: skip
    return out.stdout.strip()


def measure(numbers: int, seconds: float, connections: int, baseline_numbers: int,
            logs: Path, server_binary: str | None = None,
            worker_processes: int = WORKER_PROCESSES, rounds: int = ROUNDS) -> Report:  # fmt: skip
    """`server_binary`: the redis-server to run (None: the embedded one)."""
    first = THREAD_BLOCK * (numbers // THREAD_BLOCK + 1)  # wrk's numbers above the bulk's
    threads = min(connections, os.cpu_count() or 1)
    if first + threads * THREAD_BLOCK > NUMBER_SPACE:
        raise ValueError(f"{numbers:,} bulk numbers leave too few for {threads} wrk threads")
    # Each round's numbers: a slice of each wrk thread's block.
    per_round = THREAD_BLOCK // rounds
    load_start, code = _load(), _code()
    redis_server = EmbeddedRedis(logs / "redis", binary=server_binary).start()
    try:
        bench = Bench(redis_server.url, logs, 0.0, API_WORKERS, CONCURRENCY)
        bases = [baseline(bench, baseline_numbers, CONCURRENCY)]
        print(f"baseline: {bases[0].rate:,.0f} numbers/s", file=sys.stderr, flush=True)
        worker = (*CLI, "worker", "--concurrency", str(worker_processes))
        done: list[Round] = []
        with stack(bench, ("voicenter",), worker_argv=worker, beat=True) as s:
            bulk_phase = bulk(s, bench, numbers)
            print(f"bulk: {bulk_phase.figure.rate:,.0f} numbers/s", file=sys.stderr, flush=True)
            after_bulk = settle(s, bench)
            for i in range(rounds):
                seen, events_phase, held = events(s, bench, first + i * per_round, seconds,
                                                  connections, f"wrk-events-{i + 1}")  # fmt: skip
                if max(seen.sent, default=0) > per_round:
                    raise RuntimeError(f"a wrk thread sent more than a round's {per_round:,} "
                                       "numbers: fewer --rounds")  # fmt: skip
                after_events = settle(s, bench)
                no_op = noop(s, seconds, connections, f"wrk-noop-{i + 1}")
                done.append(Round(seen, events_phase, held, no_op, after_events))
                print(f"round {i + 1}: events {seen.rate:,.0f} accepted/s, "
                      f"{events_phase.figure.rate:,.0f}/s end to end; no-op {no_op.rate:,.0f}/s; "
                      f"accepts {done[-1].accepts:.2f}", file=sys.stderr, flush=True)  # fmt: skip
        bases.append(baseline(bench, baseline_numbers, CONCURRENCY))
    finally:
        redis_server.stop()
    return Report(numbers, seconds, connections, bases, bulk_phase, done,
                  (load_start, _load()), code, after_bulk, servers.describe(server_binary),
                  worker_processes)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--numbers", type=int, default=50_000,
                        help=f"bulk numbers, a multiple of {PER_REQUEST:,}")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10, help="each wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk's connections")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"events and no-op runs, alternated (default {ROUNDS}); the table "
                        "shows the round of the median accepts ratio")  # fmt: skip
    parser.add_argument("--baseline-numbers", type=int, default=None,
                        help="each baseline run (default: min(numbers, 10000))")  # fmt: skip
    parser.add_argument("--worker-processes", type=int, default=WORKER_PROCESSES,
                        help="optout worker --concurrency (default: its own default, "
                        f"{WORKER_PROCESSES})")  # fmt: skip
    servers.add_option(parser)
    args = parser.parse_args(argv)
    if args.numbers <= 0 or args.numbers % PER_REQUEST:
        parser.error(f"--numbers must be a positive multiple of {PER_REQUEST:,}")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1 to 10")
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    nb = args.baseline_numbers or min(args.numbers, 10_000)
    with tempfile.TemporaryDirectory(prefix="optout-shape-") as tmp:
        report = measure(args.numbers, args.seconds, args.connections, nb, Path(tmp),
                         args.redis_server, args.worker_processes, args.rounds)  # fmt: skip
    print("\n".join(report.lines()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
