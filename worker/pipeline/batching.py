"""The batch pipeline: flush staged numbers into chunks, push a chunk, sweep, recover, replay."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
import structlog

from config import Settings, routes_allow
from worker.domain.phones import mask
from worker.ops import metrics
from worker.pipeline import lease
from worker.pipeline.lease import LeaseLostError
from worker.providers.base import Action, NumberResult, Provider, PushItem, unexpected
from worker.providers.errors import AuthError, PermanentError, PushInterrupted, RetryableError
from worker.state.store import (
    AsyncAccept,
    Chunk,
    ChunkItem,
    CompleteOptions,
    OpenChunk,
    Replication,
    Staged,
    Store,
)

log = structlog.get_logger("optout.pipeline")

#: Flush modes: see worker/state/lua/claim.lua.
FULL, ALL, DUE = "full", "all", "due"
#: Chunks one claim leases at most; a flush claims again while claims come back full. Small,
#: for the same reason as accept's WRITE_CHUNK: a claim of 50 chunks held Redis for ~35 ms.
CLAIM_CHUNKS = 10
#: After its chunk, a push claims the next full chunk of the same batch and pushes it too,
#: for up to this long: a backlog drains without a flush task, a push task and their two
#: broker messages per chunk (Celery's per-task cost was a third of the worker's CPU on the
#: bulk path). Short, so that a warm shutdown still waits little for the task in hand.
CHAIN_SECONDS = 2.0
#: Chunks in a row whose requests all failed as a whole before a provider's circuit opens.
BREAKER_THRESHOLD = 3
#: The longest an open circuit holds a provider before the next probe.
BREAKER_CAP_SECONDS = 60.0
#: How long a process trusts its copy of the deployment's live targets.
DIRECTORY_SECONDS = 5.0


class Dispatcher(Protocol):
    """Where pipeline work is sent: Celery in production, a direct call in unit tests."""

    def flush(self, target: str, action: Action, mode: str, delay: float = 0.0) -> None: ...

    def push(self, chunk_id: str, provider: str) -> None: ...


@dataclass
class Context:
    """What the pipeline functions need, built once per process and passed down."""

    settings: Settings
    store: Store
    providers: dict[str, Provider]
    dispatcher: Dispatcher
    rng: random.Random = field(default_factory=random.Random)
    own_numbers: frozenset[str] = frozenset()
    registered: bool = False
    #: The accept script from an event loop (the HTTP API); None: through a worker thread.
    async_accept: AsyncAccept | None = None
    #: Seconds for durations (the push chain, the directory's age); tests pass a fake.
    monotonic: Callable[[], float] = time.monotonic
    _announced: float = 0.0
    _directory: tuple[float, dict[str, dict[str, Any]]] | None = None

    def targets(self) -> dict[str, str]:
        """Every target of every provider this process has enabled -> its provider's name
        (what it announces; the deployment's live targets are in `directory`)."""
        return {t: name for name, p in self.providers.items() for t in p.targets()}

    def known_targets(self) -> list[str]:
        """Every target of the deployment (announced by any process, live or not), and this
        process's own: what status views and the SLA look at."""
        return sorted(set(self.store.known_targets()) | set(self.targets()))

    def route(self, source: str, action: Action, has_call: bool) -> dict[str, Any]:
        """Which providers an event from `source` goes to (accept.lua applies it to every
        live target): OPTOUT_ROUTES' includes (none: all) and excludes; `call`: the event
        carries a call record. A remove goes to every target, routes or not: the ledger
        holds one state per number, so a remove meant for one provider would unblock the
        number for all of them anyway (scrub, export), and any later push of it (a ledger
        change while in flight, a catch-up, reconcile) would carry the remove everywhere;
        staging drops it where it cannot apply (an add-only target)."""
        if action is Action.REMOVE:
            return {"include": [], "exclude": [], "call": True}
        rule = self.settings.routes.get(source) or {}
        return {
            "include": list(rule.get("include") or []),
            "exclude": list(rule.get("exclude") or []),
            "call": has_call,
        }

    def routed_by_any(
        self,
        sources: list[str],
        provider: str,
        table: dict[str, dict[str, list[str]]] | None = None,
    ) -> bool:
        """Whether an add from one of these sources is owed to `provider`: by `table`, the
        announced routes (Store.announced_routes, what target_state decides by: during a
        rolling change of OPTOUT_ROUTES this process's own may be the old ones), else by
        this process's own."""
        routes = self.settings.routes if table is None else table
        return any(routes_allow(routes, src, provider) for src in sources)

    def announce_due(self) -> bool:
        """This process has not announced its targets yet, or not for a third of their TTL
        (by the store's clock, which the TTL is kept in)."""
        ttl = self.settings.target_ttl_seconds
        return not self.registered or self.store.clock() - self._announced >= ttl / 3

    def ensure_registered(self, force: bool = False) -> None:
        """Announce this process's targets with their capabilities (register.lua): at first
        use and again before their TTL runs out. A target that becomes live (new, or back
        after no process had it for a TTL) is caught up from the ledger by the sweep."""
        if not force and not self.announce_due():
            return
        metas = {}
        for name, provider in self.providers.items():
            caps = provider.capabilities
            for target in provider.targets():
                metas[target] = {
                    "provider": name,
                    "add_only": not caps.supports_remove,
                    "needs_ctx": caps.needs_call_context,
                    "native_expiry": caps.supports_expiry,
                    "max_batch": caps.max_batch,
                    "one_list": caps.one_list,
                }
        live, routes_changed = self.store.register_targets(
            metas, self.settings.target_ttl_seconds, self.settings.routes
        )
        if routes_changed == "changed":
            # Every live target catches up again: routes that keep changing (processes
            # whose OPTOUT_ROUTES differ) restart those catch-ups at every announcement.
            log.warning("routes_changed", routes=self.settings.routes)
        elif routes_changed == "new":
            log.info("routes_announced", routes=self.settings.routes)
        for target, catch_up in live:
            log.info("target_live", target=target, catch_up=catch_up)
        self.registered = True
        self._announced = self.store.clock()
        self._directory = None

    def directory(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The deployment's live targets -> their capabilities, as announced in Redis by
        every process (read at most every few seconds)."""
        now = self.monotonic()
        if refresh or self._directory is None or now - self._directory[0] >= DIRECTORY_SECONDS:
            self._directory = (now, self.store.directory())
        return self._directory[1]

    def target_meta(self, target: str) -> dict[str, Any] | None:
        """A live target's capabilities (this process's own, if it has the target)."""
        meta = self.directory().get(target)
        if meta is None:
            meta = self.directory(refresh=True).get(target)
        return meta

    def batch_size(self, target: str) -> int:
        meta = self.target_meta(target) or {}
        return min(self.settings.batch_size, int(meta.get("max_batch") or 100))

    def max_in_flight(self, provider: str) -> int:
        """Chunks one target may have leased at once: the provider's concurrency cap (more
        would only wait for a request slot), or with no cap two per worker process."""
        _, concurrency = self.settings.limits_for(provider)
        return concurrency if concurrency > 0 else 2 * self.settings.worker_concurrency

    def replication(self) -> Replication | None:
        """How many replicas an accepted write must reach before it is answered."""
        replicas = self.settings.redis_wait_replicas
        return Replication(replicas, self.settings.redis_wait_timeout_ms) if replicas else None

    @property
    def late_ms(self) -> int:
        """How long after its push lost the chunk (recovered, or completed by another
        delivery of its task) a request may still land at the provider: every request
        renews the lease first, so one sent in time has a lease ahead of it; the margin is
        for a worker that stalls mid-request and for other hosts' clocks."""
        settings = self.settings
        return int((settings.lease_seconds + settings.http_timeout_seconds) * 1000)

    def complete_options(self, hold_seconds: float = 0.0) -> CompleteOptions:
        """How a chunk's failures are treated (settings, in the units the script reads)."""
        settings = self.settings
        return CompleteOptions(
            max_attempts=settings.max_attempts,
            backoff_base_ms=int(settings.retry_base_seconds * 1000),
            backoff_cap_ms=int(settings.retry_max_seconds * 1000),
            outage_budget_ms=int(settings.outage_budget_hours * 3_600_000),
            breaker_threshold=BREAKER_THRESHOLD,
            breaker_cap_ms=int(BREAKER_CAP_SECONDS * 1000),
            moved_retry_ms=int(settings.target_ttl_seconds * 1000),
            late_ms=self.late_ms,
            hold_ms=int(hold_seconds * 1000),
        )

    def claim(
        self, target: str, provider: str, action: Action, mode: str, max_chunks: int
    ) -> tuple[str, list[str], list[Staged]]:
        """Lease staged numbers of one batch as chunks, within the target's in-flight cap."""
        return self.store.claim(
            target,
            provider,
            action,
            size=self.batch_size(target),
            lease_seconds=self.settings.lease_seconds,
            mode=mode,
            linger_ms=self.settings.batch_linger_ms,
            max_chunks=max_chunks,
            max_in_flight=self.max_in_flight(provider),
        )


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
        status, chunk_ids, staged = ctx.claim(target, provider, action, mode, CLAIM_CHUNKS)
        for chunk_id in chunk_ids:
            ctx.dispatcher.push(chunk_id, provider)
        schedule(ctx, staged)
        total += len(chunk_ids)
        if status != "ok" or len(chunk_ids) < CLAIM_CHUNKS:
            break
    if total:
        log.info("flushed", target=target, action=action.value, mode=mode, chunks=total)
    return total


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
    opened = ctx.store.open_chunk(chunk_id, ctx.settings.lease_seconds)
    if opened is None:
        # Completed or recovered already: a redelivered task has nothing left to do.
        return {}
    chunk = opened.chunk
    started = ctx.monotonic()
    totals: Counter[str] = Counter(push_chunk(ctx, opened))
    while chunk.provider in ctx.providers and not totals.keys() & {"paused", "lease_lost"}:
        status, chunk_ids, staged = ctx.claim(
            chunk.target, chunk.provider, chunk.action, FULL, max_chunks=1
        )
        schedule(ctx, staged)
        if status != "ok" or not chunk_ids:
            break
        if ctx.monotonic() - started >= CHAIN_SECONDS:
            ctx.dispatcher.push(chunk_ids[0], chunk.provider)
            break
        following = ctx.store.open_chunk(chunk_ids[0], ctx.settings.lease_seconds)
        if following is None:
            break  # recovered already (its lease cannot have run out yet, but be safe)
        totals.update(push_chunk(ctx, following))
    return dict(totals)


#: What a number's result is sent to complete.lua as.
Encoded = tuple[str, str, str, int, float, int, int]
_STALE: Encoded = ("stale", "stale", "", 0, 0.0, 0, 0)
_UNSENT: Encoded = ("unsent", "unsent", "", 0, 0.0, 0, 0)


def push_chunk(ctx: Context, opened: OpenChunk) -> dict[str, int]:
    """Push one leased chunk and record every number's outcome."""
    started = time.perf_counter()
    chunk = opened.chunk
    provider = ctx.providers.get(chunk.provider)
    if provider is None or opened.stopped:
        # Not for this worker, or its provider is paused or held: staged again, unsent.
        schedule(ctx, ctx.store.release(chunk.id, recover=False, late_ms=ctx.late_ms)[1])
        return {}

    want = "blocked" if chunk.action is Action.ADD else "unblocked"
    stale: set[str] = set()
    live: list[PushItem] = []
    for item in chunk.items:
        state, version = opened.states[item.e164]
        if state != want or version != item.version:
            # Re-read before pushing: the ledger moved, so the newest state goes out next.
            stale.add(item.e164)
        else:
            live.append(_push_item(item))

    work = _Push(ctx, chunk, provider)
    stopped: AuthError | LeaseLostError | None = None
    if live:
        try:
            with lease.holding(lambda: ctx.store.renew(chunk.id, ctx.settings.lease_seconds)):
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

    encoded: dict[str, Encoded] = {}
    for item in chunk.items:
        if item.e164 in stale:
            encoded[item.e164] = _STALE
            continue
        result = work.results.get(item.e164)
        if result is None:
            # Not sent: interrupted before its request (paused, lease lost), or the adapter
            # did not mention it (never assumed done; it may have been sent).
            encoded[item.e164] = _UNSENT if stopped else ("retry", "no_answer", "", 0, 0.5, 0, 1)
            continue
        encoded[item.e164] = (
            result.outcome.value,
            result.reason,
            result.detail[:300],
            int((result.retry_after or 0.0) * 1000),
            ctx.rng.random(),
            int((result.retry_window or 0.0) * 1000),
            int(result.may_land),
        )
    # One worker's Retry-After holds the provider for every worker.
    hold = max((r.retry_after or 0.0 for r in work.results.values()), default=0.0)
    done = ctx.store.complete(chunk, encoded, ctx.complete_options(hold))
    schedule(ctx, done.staged)
    _count(chunk, encoded, done.status, ctx.store.now_ms())
    log.info(
        "chunk_pushed",
        chunk=chunk.id,
        provider=chunk.provider,
        target=chunk.target,
        action=chunk.action.value,
        size=len(chunk.items),
        requests=work.requests,
        status=done.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **done.counts,
    )
    if done.circuit == "open":
        log.warning("circuit_open", provider=chunk.provider, chunk=chunk.id)
    for n, r in encoded.items():
        if r[0] in ("retry", "outage", "permanent"):
            log.info(
                "number_failed",
                phone=mask(n),
                provider=chunk.provider,
                outcome=r[0],
                reason=r[1],
            )
    if isinstance(stopped, AuthError):
        return {**done.counts, "paused": len(chunk.items)}
    if stopped is not None:
        log.warning("lease_lost", chunk=chunk.id, provider=chunk.provider)
        return {**done.counts, "lease_lost": len(chunk.items)}
    return done.counts


def _count(chunk: Chunk, encoded: dict[str, Encoded], status: str, now_ms: int) -> None:
    # Counted per outcome, not per number: in multiprocess mode every increment is a locked
    # write to a shared file, and a sixth of a chunk's push CPU went to them.
    metrics.BATCH.labels(chunk.provider).observe(len(chunk.items))
    for outcome, count in Counter(r[0] for r in encoded.values()).items():
        metrics.PUSHED.labels(chunk.provider, outcome).inc(count)
    if status != "ok":
        return
    propagation = metrics.PROPAGATION.labels(chunk.provider)
    for item in chunk.items:
        if encoded[item.e164][0] == "done" and item.updated_ms:
            propagation.observe((now_ms - item.updated_ms) / 1000)


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
    lifted, staged = ctx.store.expire_due()
    if lifted:
        log.info("blocks_expired", count=lifted)
    schedule(ctx, staged)
    moved, staged = ctx.store.sweep_retries()
    schedule(ctx, staged)
    now_ms = ctx.store.now_ms()
    linger = ctx.settings.batch_linger_ms
    for target, action, _size, oldest in ctx.store.staged_batches(sorted(ctx.directory())):
        if oldest + linger <= now_ms:
            ctx.dispatcher.flush(target, action, DUE)
    return moved


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
            position, numbers = ctx.store.confirmed_page(target, position, page)
            wanted = numbers
            next_cursor = None if position == "0" else f"c:{position}"
        else:
            position, numbers = ctx.store.blocked_page(position, page)
            sources = ctx.store.ledger_sources(numbers)
            wanted = [
                n for n, srcs in zip(numbers, sources, strict=True)
                if ctx.routed_by_any(srcs, provider, table)
            ]  # fmt: skip
            next_cursor = "c:0" if position == "0" else f"b:{position}"
        if next_cursor is not None:
            next_cursor += at + generation  # this catch-up's own, to the end
        if wanted:
            count, staged = ctx.store.stage_many(target, wanted)
            schedule(ctx, staged)
            staged_total += count
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
        status, staged = ctx.store.release(chunk_id, recover=True, late_ms=ctx.late_ms)
        if status != "ok":
            continue  # renewed since it was listed, or completed meanwhile
        schedule(ctx, staged)
        recovered += 1
        log.warning("chunk_recovered", chunk=chunk_id)
    return recovered


def replay(ctx: Context, ids: list[str], who: str) -> int:
    """Stage dead letters again; each leaves the store when its push succeeds."""
    replayed, staged = ctx.store.replay(ids, who)
    schedule(ctx, staged)
    return replayed
