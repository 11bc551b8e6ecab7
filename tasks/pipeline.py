"""The pipeline's Celery tasks: flush a batch, push a chunk, sweep, recover, replay,
reconcile; archive the audit stream and purge what retention lets go."""

from __future__ import annotations

import redis

from worker.archive.archiver import archive_pending
from worker.archive.retention import purge_expired
from worker.celery import app
from worker.ops.reconcile import scheduled_reconcile
from worker.pipeline import batching as work
from worker.pipeline import push as pushing
from worker.providers.base import Action
from worker.runtime import wiring
from worker.runtime.celery_app import (
    ARCHIVE_TASK,
    AUDIT_PURGE_TASK,
    FLUSH_TASK,
    PUSH_TASK,
    RECONCILE_TASK,
    RECOVER_TASK,
    REPLAY_TASK,
    SWEEP_TASK,
)

# Redis hiccups are worth a few quick retries; state is durable, so a task that still
# fails is repaired by the sweep (staged batches) or lease recovery (chunks).
_RETRY = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


@app.task(name=FLUSH_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def flush(target: str, action: str, mode: str) -> int:
    return work.flush(wiring.context(), target, Action(action), mode)


@app.task(name=PUSH_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def push(chunk_id: str) -> dict[str, int]:
    return pushing.push(wiring.context(), chunk_id)


@app.task(name=SWEEP_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def sweep() -> int:
    ctx = wiring.context()
    return work.on_schedule(ctx, "sweep", ctx.settings.sweep_interval_seconds, work.sweep)


@app.task(name=RECOVER_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def recover() -> int:
    ctx = wiring.context()
    return work.on_schedule(ctx, "recover", ctx.settings.recover_interval_seconds, work.recover)


@app.task(name=REPLAY_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def replay(ids: list[str], who: str) -> int:
    return work.replay(wiring.context(), ids, who)


@app.task(name=RECONCILE_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def reconcile() -> int:
    return scheduled_reconcile(wiring.context())


@app.task(name=ARCHIVE_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def archive() -> int:
    return archive_pending(wiring.context())


@app.task(name=AUDIT_PURGE_TASK, **_RETRY)  # type: ignore[untyped-decorator]
def audit_purge() -> int:
    ctx = wiring.context()
    return work.on_schedule(ctx, "audit_purge", 3600.0, purge_expired)
