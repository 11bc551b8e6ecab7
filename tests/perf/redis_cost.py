"""Redis CPU per number, script by script, for the pipeline's steps (no HTTP, no workers).

    python -m tests.perf.redis_cost                  # 20,000 numbers, 5,000 events, 3 runs
    python -m tests.perf.redis_cost --numbers 2000 --events 500 --runs 1

Redis is where the bulk path's push phase is bound and a third of an event's cost goes
(README: the production shape). This drives the real scripts on a fresh embedded Redis (AOF
off: the scripts' own CPU, without the fsyncs) through one target's whole path: bulk accepts
of 200 numbers a call (the API's parts), claims of one chunk a call, opened in the same
call (as a push chain takes its next chunk), each completed as delivered, the archive
drain's reads and cleanups; then one-number events pipelined 200 at a time (the API's
group commit). Each step's figure is the Redis main thread's CPU (`INFO cpu`) it took, per
number, so that a change to a script is measured on its own: far steadier than the
end-to-end figures, which move with the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.perf import servers
from tests.worker.state.scene import OPTIONS, all_done, event, live
from worker.providers.base import Action
from worker.runtime.embedded import EmbeddedRedis
from worker.state.ledger import accept_args
from worker.state.store import Store

ROUTE = {"include": [], "exclude": [], "call": False}
STEPS = ("accept (bulk)", "claim and open", "complete", "archive drain", "accept (event)")


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


@dataclass
class Run:
    """Microseconds of Redis CPU per number for each step of one run."""

    us: dict[str, float] = field(default_factory=dict)
    chunks: int = 0
    entries: int = 0


def one_run(client: redis.Redis, prefix: str, numbers: int, events: int) -> Run:
    store = Store(client, prefix=prefix, audit_cap=50)
    live(store)
    run = Run()
    phones = [f"+97259{i:07d}" for i in range(numbers + events)]

    def step(name: str, count: int, work: Callable[[], None]) -> None:
        before = _cpu(client)
        work()
        run.us[name] = (_cpu(client) - before) * 1e6 / max(1, count)

    def accept_bulk() -> None:
        for start in range(0, numbers, 200):
            part = [(n, "") for n in phones[start : start + 200]]
            assert store.accept(event(store, Action.ADD), part, ROUTE, 3600).status == "ok"

    chunks: list[str] = []
    opened = []

    def claim() -> None:
        # As a push chain takes its next chunk: one a call, opened in the same call.
        while True:
            claimed = store.claim(
                "voicenter", "voicenter", Action.ADD, size=100, lease_seconds=60, mode="all",
                linger_ms=0, max_chunks=1, open_first=True,
            )  # fmt: skip
            if claimed.status != "ok" or not claimed.chunks:
                return
            assert claimed.opened is not None
            chunks.extend(claimed.chunks)
            opened.append(claimed.opened)

    def complete_all() -> None:
        for found in opened:
            store.complete(found.chunk, all_done(found.chunk), OPTIONS)

    def drain() -> None:
        while batch := store.pending_audit(1000):
            run.entries += len(batch)
            store.forget_archived(batch)

    def accept_events() -> None:
        script = store.script("accept")
        pipe = client.pipeline(transaction=False)
        for i, n in enumerate(phones[numbers:]):
            args = accept_args(event(store, Action.ADD), [(n, "")], ROUTE, 3600, 50, "once")
            pipe.evalsha(script.sha, 0, *store.argv(*args))
            if i % 200 == 199:
                pipe.execute()
        pipe.execute()

    step(STEPS[0], numbers, accept_bulk)
    step(STEPS[1], numbers, claim)
    step(STEPS[2], numbers, complete_all)
    step(STEPS[3], numbers, drain)
    step(STEPS[4], events, accept_events)
    run.chunks = len(chunks)
    return run


def measure(numbers: int, events: int, runs: int, server_binary: str | None = None) -> list[Run]:
    """`server_binary`: the redis-server to run (None: the embedded one)."""
    with tempfile.TemporaryDirectory(prefix="optout-redis-cost-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", binary=server_binary).start()
        try:
            client = redis.Redis.from_url(server.url)
            client.config_set("appendonly", "no")
            out = []
            for i in range(runs):
                out.append(one_run(client, f"cost{i}:", numbers, events))
                client.flushall()
            return out
        finally:
            server.stop()


def lines(numbers: int, events: int, results: list[Run], server: str = "") -> list[str]:
    first = results[0]
    head = (
        f"Redis CPU per number, script by script: {numbers:,} numbers in bulk (200 an accept, "
        f"{first.chunks:,} chunks, {first.entries:,} audit entries), then {events:,} "
        f"one-number events; {len(results)} run(s), the median and the range"
    )
    out = [
        *textwrap.wrap(head, 80),
        *textwrap.wrap(f"on {server}, AOF off" if server else "", 80, break_on_hyphens=False),
        "",
        f"{'step':20}{'us/number':>11}{'range':>17}",
    ]
    total: list[float] = [0.0] * len(results)
    for name in STEPS:
        values = [r.us[name] for r in results]
        if name != STEPS[-1]:
            total = [t + v for t, v in zip(total, values, strict=True)]
        out.append(f"{name:20}{statistics.median(values):>11.1f}"
                   f"{f'{min(values):.1f}-{max(values):.1f}':>17}")  # fmt: skip
    out.append(f"{'bulk path, in all':20}{statistics.median(total):>11.1f}"
               f"{f'{min(total):.1f}-{max(total):.1f}':>17}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--numbers", type=int, default=20_000, help="bulk numbers a run")
    parser.add_argument("--events", type=int, default=5_000, help="one-number events a run")
    parser.add_argument("--runs", type=int, default=3)
    servers.add_option(parser)
    args = parser.parse_args(argv)
    results = measure(args.numbers, args.events, args.runs, args.redis_server)
    server = servers.describe(args.redis_server)
    print("\n".join(lines(args.numbers, args.events, results, server)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
