"""Batching: flush staged numbers into chunks, and the periodic work around them (sweep,
catch-up, lease recovery, replay)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import structlog

from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.records import Staged
from worker.state.targets import CatchUp

log = structlog.get_logger("optout.pipeline")

#: Flush modes: see worker/state/lua/claim.lua.
FULL, ALL, DUE = "full", "all", "due"
#: Chunks one claim leases at most; a flush claims again while claims come back full. Small,
#: for the same reason as accept's WRITE_CHUNK: a long script holds every other Redis call.
CLAIM_CHUNKS = 10
#: A flush to enqueue: target, action, mode, delay in seconds.
Flush = tuple[str, Action, str, float]


def due_flushes(ctx: Context, staged: Iterable[Staged]) -> list[Flush]:
    """The flushes a change calls for: at once when it completed a chunk (unless the target
    is at its in-flight cap: a push in flight takes the chunk when it is done, see `push`),
    after the linger for a batch it opened. (A batch that stays full because no worker
    drains it gets no further flushes from here; the sweep flushes it.)"""
    due: list[Flush] = []
    for batch in staged:
        meta = ctx.target_meta(batch.target)
        if meta is None:
            continue  # not live: it catches up when it comes back
        provider = str(meta.get("provider"))
        size = ctx.batch_size(batch.target)
        if batch.filled(size) and batch.in_flight < ctx.max_in_flight(provider) * size:
            due.append((batch.target, batch.action, FULL, 0.0))
        if batch.opened:
            due.append((batch.target, batch.action, ALL, ctx.settings.batch_linger_ms / 1000.0))
    return due


def dispatch(ctx: Context, flushes: Iterable[Flush]) -> None:
    for target, action, mode, delay in flushes:
        ctx.dispatcher.flush(target, action, mode, delay)


def schedule(ctx: Context, staged: Iterable[Staged]) -> None:
    """Enqueue the flushes a change calls for (see `due_flushes`)."""
    dispatch(ctx, due_flushes(ctx, staged))


def flush(ctx: Context, target: str, action: Action, mode: str) -> int:
    """Lease staged numbers as chunks of at most the batch size and enqueue one push each
    (on the provider's queue: a worker that has the provider takes it)."""
    ctx.ensure_registered()
    meta = ctx.target_meta(target)
    if meta is None:
        log.info("flush_not_live", target=target)
        return 0
    provider = str(meta.get("provider"))
    total = 0
    while True:
        claimed = ctx.claim(target, provider, action, mode, CLAIM_CHUNKS)
        for chunk_id in claimed.chunks:
            ctx.dispatcher.push(chunk_id, provider)
        schedule(ctx, claimed.staged)
        total += len(claimed.chunks)
        if claimed.status != "ok" or len(claimed.chunks) < CLAIM_CHUNKS:
            break
    if total:
        log.info("flushed", target=target, action=action.value, mode=mode, chunks=total)
    return total


def on_schedule(
    ctx: Context, name: str, every_seconds: float, run: Callable[[Context], int]
) -> int:
    """A beat task's run, unless the same task ran less than half its interval ago by the
    server's clock: the runs beat queued while no worker took them collapse into one. (A
    Celery expiry would do it by each host's own clock: a worker host ahead of beat's would
    drop every sweep.)"""
    token = ctx.store.take_turn(name, every_seconds / 2)
    if token is None:
        return 0
    try:
        return run(ctx)
    except Exception:
        ctx.store.give_turn_back(name, token)  # so that Celery's retry of it is not skipped
        raise


def sweep(ctx: Context) -> int:
    """Lift expired blocks, move due retries back into batches, take a catch-up step for
    targets that became live, and flush batches whose linger has passed."""
    ctx.ensure_registered()
    backfill(ctx)
    ctx.store.adopt_step()
    ctx.store.move_confirmations()
    expired = ctx.store.expire_due()
    if expired.count:
        # A wave of blocks ending at once is lifted 1,000 a tick: how many are still due.
        log.info("blocks_expired", count=expired.count, due=ctx.store.expiry_due_count())
    schedule(ctx, expired.staged)
    swept = ctx.store.sweep_retries()
    schedule(ctx, swept.staged)
    now_ms = ctx.store.now_ms()
    linger = ctx.settings.batch_linger_ms
    for target, action, _size, oldest in ctx.store.staged_batches(sorted(ctx.directory())):
        if oldest + linger <= now_ms:
            ctx.dispatcher.flush(target, action, DUE)
    return swept.count


#: How many numbers a target's batch may hold before its catch-up waits for the pushes to
#: take them: at a per-number provider's 20 a second, a catch-up of ten million numbers
#: would otherwise stage them all within hours and keep them in Redis for days (~1 GB).
CATCH_UP_AHEAD = 20_000


def backfill(ctx: Context, page: int = 2000) -> int:
    """Catch up targets that became live (new, or back after no process had them for their
    TTL) from the ledger, one page per call (the sweep calls it every tick): first every
    blocked number (routed by the sources of the adds behind its block), then (unless the
    target was never confirmed anything) every number the target was confirmed to hold, or
    is unknown at, whose ledger state has moved since. So enabling a provider, adding an
    agent or restoring credentials never leaves a gap. A
    target whose batch holds CATCH_UP_AHEAD numbers already waits (its provider is slower
    than the catch-up, or paused). Where each stands is logged at every whole percent of a
    pass (`catch_up`), and shown by `optout provider list` and /metrics."""
    backfills = ctx.store.backfills()
    if not backfills:
        return 0
    directory = ctx.directory()
    table = ctx.store.announced_routes()  # what target_state decides by, as routes
    staged_total = 0
    for target, cursor in backfills.items():
        meta = directory.get(target)
        if meta is None:
            continue  # not live: it starts again from the top when it comes back
        backlog = ctx.store.counts([target])[target]
        if backlog["staged_add"] + backlog["staged_remove"] >= CATCH_UP_AHEAD:
            continue  # the pushes have not taken the pages before: Redis would hold them
        provider = str(meta.get("provider"))
        at = CatchUp.read(cursor)
        if at.phase == "k":
            position, numbers = ctx.store.confirmed_page(target, at.position, page)
            wanted = numbers
            next_cursor = None if position == "0" else f"k:{position}"
        else:
            position, numbers = ctx.store.blocked_page(at.position, page)
            sources = ctx.store.ledger_sources(numbers)
            wanted = [
                n for n, srcs in zip(numbers, sources, strict=True)
                if ctx.routed_by_any(srcs, provider, table)
            ]  # fmt: skip
            # Past the blocked pass: the ledger's, unless there is none to do.
            after = None if at.blocked_only else "k:0"
            next_cursor = after if position == "0" else f"b:{position}"
        if next_cursor is not None:
            next_cursor += at.generation  # this catch-up's own, to the end
        staged = 0
        if wanted:
            caught_up = ctx.store.stage_many(target, wanted)
            schedule(ctx, caught_up.staged)
            staged = caught_up.count
            staged_total += staged
        if not ctx.store.advance_backfill(target, cursor, next_cursor):
            log.info("catch_up_restarted", target=target)  # it became live again meanwhile
            continue
        _log_catch_up(ctx, target, at, next_cursor, staged, len(numbers))
    return staged_total


def catch_ups(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every catch-up under way -> where it stands: `stage` (blocked, then ledger),
    `ratio` and `percent` of that pass done (None while it reads the index of before,
    which comes first), `done_about` (the blocked pass: the numbers behind it, from its
    place in the index) and `blocked` (the numbers it goes through: `blocked:count`)."""
    positions = ctx.store.catch_ups()
    if not positions:
        return {}
    total = ctx.store.blocked_total()
    out: dict[str, dict[str, Any]] = {}
    for target, at in sorted(positions.items()):
        fraction = at.fraction()
        about = fraction is not None and at.stage == "blocked"
        out[target] = {
            "stage": at.stage,
            "ratio": fraction,
            "percent": None if fraction is None else int(100 * fraction),
            "done_about": round(fraction * total) if fraction is not None and about else None,
            "blocked": total,
        }
    return out


def _log_catch_up(
    ctx: Context, target: str, before: CatchUp, cursor: str | None, staged: int, scanned: int
) -> None:
    """A `catch_up` line when a step began a pass, ended it or crossed a whole percent of
    it: ~100 lines a pass whatever the ledger's size, not one a page."""
    after = CatchUp.read(cursor) if cursor is not None else None
    ended = after is None or after.stage != before.stage
    was = before.fraction()
    now = 1.0 if after is None or ended else after.fraction()
    began = was == 0.0
    crossed = was is not None and now is not None and int(100 * now) > int(100 * was)
    if not (began or ended or crossed):
        return
    total = ctx.store.blocked_total()
    log.info(
        "catch_up",
        target=target,
        stage=before.stage,
        percent=None if now is None else round(100 * now),
        # From the cursor's place in the index: the numbers spread evenly over its buckets.
        done_about=round(now * total) if now is not None and before.stage == "blocked" else None,
        blocked=total,
        staged=staged,
        scanned=scanned,
        done=cursor is None,
    )


def recover(ctx: Context) -> int:
    """Give back chunks whose lease ran out (their worker died or stalled) so they are
    pushed again; what the provider holds for their numbers is unknown."""
    recovered = 0
    for chunk_id in ctx.store.expired_leases():
        released = ctx.store.release(chunk_id, recover=True, late_ms=ctx.late_ms)
        if released.status != "ok":
            continue  # renewed since it was listed, or completed meanwhile
        schedule(ctx, released.staged)
        recovered += 1
        log.warning("chunk_recovered", chunk=chunk_id)
    return recovered


def replay(ctx: Context, ids: list[str], who: str) -> int:
    """Stage dead letters again; each leaves the store when its push succeeds."""
    replayed = ctx.store.replay(ids, who)
    schedule(ctx, replayed.staged)
    return replayed.count
