"""How fast the archiver drains the audit stream: a bulk accept's entries written to a real
Redis, then drained into SQLite and into PostgreSQL (when one answers) in batches of
OPTOUT_ARCHIVE_BATCH, as a worker's scheduled run does. Prints entries/s.

    python -m tests.perf.archive [--numbers 50000]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import uuid
from pathlib import Path

import redis

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.real_postgres import scratch_database, unreachable_reason
from tests.real_redis import RealRedis
from worker.archive.archiver import drain
from worker.archive.database import Archive
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime import logs
from worker.runtime.wiring import build_context


def fill(ctx: Context, numbers: int) -> int:
    """A bulk accept of `numbers` new numbers (accept.lua: an entry each), 1,000 an event."""
    phones = [f"+97250{i:07d}" for i in range(numbers)]
    for start in range(0, numbers, 1000):
        batch = [PhoneInput(p) for p in phones[start : start + 1000]]
        accept(ctx, Event("bench", Action.ADD, batch))
    return ctx.store.audit_backlog().entries


def run(url: str, label: str, numbers: int) -> str:
    client = redis.Redis.from_url(RealRedis.url())
    prefix = f"optout-archive-bench-{uuid.uuid4().hex[:8]}:"
    settings = make_settings(key_prefix=prefix)
    ctx = build_context(settings, client=client, dispatcher=QueueDispatcher())
    ctx.archive = Archive(url)
    try:
        entries = fill(ctx, numbers)
        ctx.archive.migrate()
        started = time.perf_counter()
        moved = 0
        while ctx.store.audit_backlog().entries:
            moved += drain(ctx, budget_seconds=3600)
        took = time.perf_counter() - started
        rate = moved / took
        return f"{label}: {moved} of {entries} entries in {took:.1f} s = {rate:,.0f} entries/s"
    finally:
        ctx.archive.close()
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--numbers", type=int, default=50_000)
    args = parser.parse_args(argv)
    logs.configure("json", level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(run(f"sqlite:///{Path(tmp) / 'archive.sqlite3'}", "SQLite (WAL, FULL)",
                      args.numbers), flush=True)  # fmt: skip
        if (why := unreachable_reason()) is None:
            with scratch_database() as url:
                print(run(url, "PostgreSQL 15 (local)", args.numbers), flush=True)
        else:
            print(f"PostgreSQL: skipped ({why})")
    finally:
        RealRedis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
