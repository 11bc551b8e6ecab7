"""Pushing a leased chunk to its provider and recording every number's outcome."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from worker.domain.phones import mask
from worker.ops import metrics
from worker.pipeline import lease
from worker.pipeline.batching import FULL, schedule
from worker.pipeline.context import Context
from worker.pipeline.lease import LeaseLostError
from worker.providers.base import Action, NumberResult, Provider, PushItem, unexpected
from worker.providers.errors import AuthError, PermanentError, PushInterrupted, RetryableError
from worker.state.keyspace import Slot
from worker.state.records import Chunk, ChunkItem, Claimed, Completion, ItemResult, OpenChunk

log = structlog.get_logger("optout.pipeline")

#: After its chunk, a push claims the next full chunk of the same batch and pushes it too,
#: for up to this long: a backlog drains without a flush task, a push task and their two
#: broker messages per chunk (Celery's per-task cost is a large share of a bulk worker's
#: CPU). Short, so that a warm shutdown still waits little for the task in hand.
CHAIN_SECONDS = 2.0


@dataclass
class _Push:
    """One chunk's push in progress: per-number results so far."""

    ctx: Context
    chunk: Chunk
    provider: Provider
    results: dict[str, NumberResult] = field(default_factory=dict)
    requests: int = 0

    def run(self, items: list[PushItem]) -> None:
        """Push items, halving a bulk request that one bad number sinks. Credentials refused
        or the lease lost stop it, with what was answered so far kept in `results`."""
        sent = 1 if self.provider.capabilities.bulk else len(items)
        self.requests += sent
        started = time.perf_counter()
        try:
            answers = self.provider.push(self.chunk.target, self.chunk.action, items)
        except PushInterrupted as exc:
            self._observe(started, sent)
            self.results.update(exc.results)
            raise exc.cause from None
        except (AuthError, LeaseLostError, redis.RedisError):
            raise  # a Redis error is not the numbers': the task is retried
        except RetryableError as exc:
            self._observe(started, sent)
            self.results.update({item.e164: NumberResult.of(exc) for item in items})
            return
        except PermanentError as exc:
            self._observe(started, sent)
            if len(items) == 1 or not self.provider.capabilities.bulk:
                self.results.update({item.e164: NumberResult.of(exc) for item in items})
                return
            # One bad number can sink a whole request: halve until it stands alone, so the
            # good numbers beside it are not dead-lettered with it.
            middle = len(items) // 2
            self.run(items[:middle])
            self.run(items[middle:])
            return
        except Exception as exc:  # noqa: BLE001
            self._observe(started, sent)
            self.results.update({item.e164: unexpected(exc) for item in items})
            return
        self._observe(started, sent)
        self.results.update(answers)

    def _observe(self, started: float, requests: int) -> None:
        per_request = (time.perf_counter() - started) / max(1, requests)
        metrics.LATENCY.labels(self.chunk.provider).observe(per_request)


def _push_item(item: ChunkItem) -> PushItem:
    context: dict[str, Any] = {}
    if item.context:
        try:
            context = dict(json.loads(item.context))
        except (ValueError, TypeError):
            context = {}
    return PushItem(item.e164, item.name, item.expires_ms, item.source, item.reason, context)


def push(ctx: Context, chunk_id: str) -> dict[str, int]:
    """Push one leased chunk and record every number's outcome; then go on to the full
    chunks its batch holds (claimed one at a time, within the target's in-flight cap) for
    up to CHAIN_SECONDS, and hand the next one to a new push task."""
    # (Which provider the chunk is for is known once it is opened: terms for each of ours.)
    first_slot = ctx.first_slot(ctx.providers)
    opened = ctx.store.open_chunk(chunk_id, ctx.settings.lease_seconds, first_slot)
    if opened is None:
        # Completed or recovered already: a redelivered task has nothing left to do.
        return {}
    totals: Counter[str] = Counter()
    chain_until = ctx.monotonic() + CHAIN_SECONDS
    while opened is not None:
        counts, opened = _push_chunk(ctx, opened, chain_until)
        totals.update(counts)
    return dict(totals)


def push_chunk(ctx: Context, opened: OpenChunk) -> dict[str, int]:
    """Push one leased chunk and record every number's outcome."""
    return _push_chunk(ctx, opened, None)[0]


_STALE = ItemResult("stale", "stale")
_UNSENT = ItemResult("unsent", "unsent")


def _push_chunk(
    ctx: Context, opened: OpenChunk, chain_until: float | None
) -> tuple[dict[str, int], OpenChunk | None]:
    """Push one leased chunk and record every number's outcome. In a chain (`chain_until`:
    until when, monotonic), the round trip that completes it also claims the batch's next
    full chunk: opened, to push next (the second answer), or past that time handed to a
    new push task. Paused or its lease lost, the chain ends."""
    started = time.perf_counter()
    chunk = opened.chunk
    provider = ctx.providers.get(chunk.provider)
    if provider is None or opened.stopped:
        # Not for this worker, or its provider is paused or held: staged again, unsent. (No
        # first slot was taken: an opening takes none for a stopped provider, and is given
        # terms only for this worker's own.)
        schedule(ctx, ctx.store.release(chunk.id, recover=False, late_ms=ctx.late_ms).staged)
        return {}, None

    want = "blocked" if chunk.action is Action.ADD else "unblocked"
    stale: set[str] = set()
    live: list[PushItem] = []
    for item in chunk.items:
        if opened.states[item.e164] != want or opened.versions[item.e164] != item.version:
            # Re-read before pushing: the ledger moved, so the newest state goes out next.
            stale.add(item.e164)
        else:
            live.append(_push_item(item))

    # A bulk provider's request (one a chunk) takes its slot in the round trip that opened
    # the chunk (`first`, when one was free) and gives it back in the completion's
    # (lease.Slots); on the way there an error gives it back in one of its own. A
    # per-number provider's requests give theirs back at once, each: given back in the next
    # request's round trip, a slot would pass straight to the same push (from one fan-out
    # thread to the next), and other workers waiting on a small cap would get no turn
    # within a chunk; a thread with nothing left to send would hold its slot until the
    # slowest request of the chunk was answered.
    first = (chunk.provider, opened.slot) if opened.slot else None
    slots = lease.Slots(first, opened.slot_at)
    deferred = slots if provider.capabilities.bulk else None
    given: list[Slot] = []  # handed to the completion's round trip
    completed = False
    try:
        work = _Push(ctx, chunk, provider)
        stopped: AuthError | LeaseLostError | None = None
        if live:
            try:
                seconds = ctx.settings.lease_seconds
                renew = functools.partial(ctx.store.renew, chunk.id, seconds)
                with lease.holding(renew, chunk.id, seconds, deferred):
                    work.run(live)
            except (AuthError, LeaseLostError) as exc:
                stopped = exc
        if isinstance(stopped, AuthError):
            ctx.store.pause(chunk.provider, stopped.reason, stopped.setting, stopped.detail)
            log.error(
                "provider_paused",
                provider=chunk.provider,
                reason=stopped.reason,
                fix=stopped.setting,
                hint=f"fix {stopped.setting}, then run: optout provider resume {chunk.provider}",
            )

        encoded: dict[str, ItemResult] = {}
        for item in chunk.items:
            if item.e164 in stale:
                encoded[item.e164] = _STALE
                continue
            result = work.results.get(item.e164)
            if result is None:
                # Not sent: interrupted before its request (paused, lease lost), or the adapter
                # did not mention it (never assumed done; it may have been sent).
                encoded[item.e164] = (
                    _UNSENT
                    if stopped
                    else ItemResult("retry", "no_answer", jitter=0.5, may_land=True)
                )
                continue
            encoded[item.e164] = ItemResult(
                outcome=result.outcome.value,
                reason=result.reason,
                detail=result.detail[:300],
                retry_after_ms=int((result.retry_after or 0.0) * 1000),
                jitter=ctx.rng.random(),
                window_ms=int((result.retry_window or 0.0) * 1000),
                may_land=result.may_land,
            )
        # One worker's Retry-After holds the provider for every worker.
        hold = max((r.retry_after or 0.0 for r in work.results.values()), default=0.0)
        options = ctx.complete_options(hold)
        claimed: Claimed | None = None
        given = slots.take()
        if chain_until is None or stopped is not None:
            done = ctx.store.complete(chunk, encoded, options, given)
        else:
            # Past the chain's time the chunk claimed goes to a new push task, which opens it
            # itself; within it, the claim opens it too.
            more = ctx.monotonic() < chain_until
            claim = ctx.claim_options(chunk.target, chunk.provider, FULL, 1, open_first=more)
            claim["first_slot"] = ctx.first_slot([chunk.provider]) if more else None
            done, claimed = ctx.store.complete_then_claim(chunk, encoded, options, given, **claim)
        completed = True
    finally:
        # (Given back twice when the completion's round trip failed after giving them back:
        # a ZREM of what is gone does nothing.)
        if left := slots.take() + ([] if completed else given):
            with contextlib.suppress(redis.RedisError):  # else their leases run out
                ctx.store.give_back_slots(left)
    try:
        return _recorded(ctx, chunk, encoded, work, stopped, done, claimed, started)
    except BaseException:
        if claimed is not None:
            # The chain ends here: what its round trip claimed is pushed by nobody.
            if claimed.opened is not None and claimed.opened.slot:
                with contextlib.suppress(redis.RedisError):  # else its lease runs out
                    ctx.store.give_back_slots([(chunk.provider, claimed.opened.slot)])
            for chunk_id in claimed.chunks:
                ctx.store.release(chunk_id, recover=False, late_ms=ctx.late_ms)
        raise


def _recorded(
    ctx: Context,
    chunk: Chunk,
    encoded: dict[str, ItemResult],
    work: _Push,
    stopped: AuthError | LeaseLostError | None,
    done: Completion,
    claimed: Claimed | None,
    started: float,
) -> tuple[dict[str, int], OpenChunk | None]:
    """After a chunk's completion: flushes it calls for, metrics and log lines, and the
    chain's next chunk (`_push_chunk`)."""
    schedule(ctx, done.staged)
    _count(chunk, encoded, done.status, done.now_ms or ctx.store.now_ms())
    became = chunk_result(done.status, done.counts, len(chunk.items))
    (log.info if became in ("delivered", "not_sent") else log.warning)(
        "chunk_pushed",
        chunk=chunk.id,
        provider=chunk.provider,
        target=chunk.target,
        action=chunk.action.value,
        size=len(chunk.items),
        requests=work.requests,
        result=became,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **done.counts,
    )
    if done.circuit == "open":
        log.warning("circuit_open", provider=chunk.provider, chunk=chunk.id)
    for n, r in encoded.items():
        if r.outcome in ("retry", "outage", "permanent"):
            # A permanent answer dead-letters the number at once: ops must see it.
            (log.warning if r.outcome == "permanent" else log.info)(
                "number_failed",
                phone=mask(n),
                provider=chunk.provider,
                outcome=r.outcome,
                reason=r.reason,
            )
    if isinstance(stopped, AuthError):
        return {**done.counts, "paused": len(chunk.items)}, None
    if stopped is not None:
        log.warning("lease_lost", chunk=chunk.id, provider=chunk.provider)
        return {**done.counts, "lease_lost": len(chunk.items)}, None
    return done.counts, _next(ctx, chunk, claimed)


def _next(ctx: Context, chunk: Chunk, claimed: Claimed | None) -> OpenChunk | None:
    """The chain's next chunk, from the claim that came with the completion: opened, or
    handed to a push task of its own (claimed without opening: past the chain's time)."""
    if claimed is None:
        return None
    schedule(ctx, claimed.staged)
    if claimed.status != "ok" or not claimed.chunks:
        return None
    if claimed.opened is None:
        ctx.dispatcher.push(claimed.chunks[0], chunk.provider)
    return claimed.opened


def chunk_result(status: str, counts: dict[str, int], size: int) -> str:
    """One word for what became of a chunk, for its log line: delivered (every number done
    or stale), dead_lettered (some given up on), retrying (none delivered, some to retry),
    partly_delivered, not_sent (handed back unsent), or orphan (recovered meanwhile: its
    answer confirms nothing)."""
    if status != "ok":
        return "orphan"
    delivered = counts.get("done", 0) + counts.get("stale", 0)
    if counts.get("dead", 0):
        return "dead_lettered"
    if delivered >= size:
        return "delivered"
    if counts.get("unsent", 0) + counts.get("stale", 0) >= size:
        return "not_sent"
    return "partly_delivered" if counts.get("done", 0) else "retrying"


def _count(chunk: Chunk, encoded: dict[str, ItemResult], status: str, now_ms: int) -> None:
    # Counted per outcome, not per number: in multiprocess mode every increment is a locked
    # write to a shared file.
    metrics.BATCH.labels(chunk.provider).observe(len(chunk.items))
    for outcome, count in Counter(r.outcome for r in encoded.values()).items():
        metrics.PUSHED.labels(chunk.provider, outcome).inc(count)
    if status != "ok":
        return
    propagation = metrics.PROPAGATION.labels(chunk.provider)
    for item in chunk.items:
        if encoded[item.e164].outcome == "done" and item.updated_ms:
            propagation.observe((now_ms - item.updated_ms) / 1000)
