"""Batching: flush staged numbers into chunks, and the periodic work around them (sweep,
catch-up, lease recovery, replay)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.records import Staged

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
        log.info("blocks_expired", count=expired.count)
    schedule(ctx, expired.staged)
    swept = ctx.store.sweep_retries()
    schedule(ctx, swept.staged)
    now_ms = ctx.store.now_ms()
    linger = ctx.settings.batch_linger_ms
    for target, action, _size, oldest in ctx.store.staged_batches(sorted(ctx.directory())):
        if oldest + linger <= now_ms:
            ctx.dispatcher.flush(target, action, DUE)
    return swept.count


def backfill(ctx: Context, page: int = 2000) -> int:
    """Catch up targets that became live (new, or back after no process had them for their
    TTL) from the ledger, one page per call (the sweep calls it every tick): first every
    blocked number (routed by the sources of the adds behind its block), then every number the
    target was confirmed to hold, or is unknown at, whose ledger state has moved since. So
    enabling a provider, adding an agent or restoring credentials never leaves a gap."""
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
        provider = str(meta.get("provider"))
        where, at, generation = cursor.partition("@")
        phase, _, position = where.rpartition(":")
        if phase == "c":
            # The release before's second pass: an HSCAN cursor over `confirmed:{target}`.
            # Taken for a SCAN cursor of the keyspace it would go on from an arbitrary
            # bucket, past numbers the target holds that the ledger lifted: start over.
            phase, position = "k", "0"
        if phase == "k":
            position, numbers = ctx.store.confirmed_page(target, position, page)
            wanted = numbers
            next_cursor = None if position == "0" else f"k:{position}"
        else:
            position, numbers = ctx.store.blocked_page(position, page)
            sources = ctx.store.ledger_sources(numbers)
            wanted = [
                n for n, srcs in zip(numbers, sources, strict=True)
                if ctx.routed_by_any(srcs, provider, table)
            ]  # fmt: skip
            next_cursor = "k:0" if position == "0" else f"b:{position}"
        if next_cursor is not None:
            next_cursor += at + generation  # this catch-up's own, to the end
        if wanted:
            caught_up = ctx.store.stage_many(target, wanted)
            schedule(ctx, caught_up.staged)
            staged_total += caught_up.count
        if not ctx.store.advance_backfill(target, cursor, next_cursor):
            log.info("catch_up_restarted", target=target)  # it became live again meanwhile
            continue
        log.info(
            "catch_up",
            target=target,
            staged=staged_total,
            scanned=len(numbers),
            done=next_cursor is None,
        )
    return staged_total


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
