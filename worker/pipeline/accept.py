"""Accept: the one function every ingress calls to turn an opt-out event into staged work."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import redis
import structlog

from worker.domain.errors import OptoutError
from worker.domain.phones import Convention, Normalised, Rejected, mask, normalise
from worker.ops import metrics
from worker.pipeline.batching import Flush, dispatch, due_flushes
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.records import AcceptOutcome, Staged
from worker.state.replication import ReplicationError

log = structlog.get_logger("optout.accept")
audit_log = structlog.get_logger("optout.audit")


class AcceptError(OptoutError):
    """The event as a whole is refused; `reason` says why (bad_source, too_many_phones, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason)


class StoreUnavailableError(AcceptError):
    """Redis could not durably take the event: the sender must retry."""

    def __init__(self, message: str) -> None:
        super().__init__("store_unavailable", message)


class AuditBacklogError(StoreUnavailableError):
    """The audit archive is so far behind (OPTOUT_AUDIT_BACKLOG_LIMIT entries wait in Redis)
    that accepts stop until it catches up: the sender retries (503), nothing is dropped."""

    def __init__(self, entries: int) -> None:
        AcceptError.__init__(
            self, "audit_backlog", f"the audit archive is behind ({entries} entries wait in "
            "Redis): opt-outs are refused until it catches up; retry later",
        )  # fmt: skip


def _refuse_when_backlogged(ctx: Context) -> None:
    from worker.archive.archiver import over_limit

    entries = over_limit(ctx)
    if entries is not None:
        raise AuditBacklogError(entries)


@dataclass(frozen=True)
class PhoneInput:
    """One phone as the sender wrote it, with an optional label."""

    raw: object
    name: str = ""


@dataclass(frozen=True)
class Event:
    """An opt-out event from any ingress, before validation."""

    source: str
    action: Action
    phones: list[PhoneInput]
    reason: str = ""
    idempotency_key: str | None = None
    occurred_at: datetime | None = None
    expires_at: datetime | None = None
    convention: Convention = Convention.NATIONAL
    region: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    body: Any = None  # what the idempotency hash covers; defaults to the fields above


@dataclass(frozen=True)
class PhoneResult:
    """What became of one phone of an event."""

    input: object
    status: str  # accepted | rejected
    phone: str | None = None
    reason: str | None = None
    flags: tuple[str, ...] = ()
    ledger: str | None = None  # applied | extended | unchanged | stale (accepted only)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "status": self.status}
        if self.phone:
            out["phone"] = self.phone
        if self.reason:
            out["reason"] = self.reason
        if self.flags:
            out["flags"] = list(self.flags)
        if self.ledger:
            out["ledger"] = self.ledger
        return out


@dataclass(frozen=True)
class AcceptResult:
    """The answer to an event: its id, whether it repeated an earlier one, and per phone."""

    event_id: str
    duplicate: bool
    phones: list[PhoneResult]

    @property
    def accepted(self) -> int:
        return sum(1 for p in self.phones if p.status == "accepted")

    @property
    def rejected(self) -> int:
        return len(self.phones) - self.accepted


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _canonical(event: Event) -> str:
    body = event.body
    if body is None:
        body = {
            "action": event.action.value,
            "phones": [[str(p.raw), p.name] for p in event.phones],
            "reason": event.reason,
            "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
            "expires_at": event.expires_at.isoformat() if event.expires_at else None,
            "context": event.context,
        }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


#: Event times before this are an unset clock, not a time (see `_plan`).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

#: Numbers per Lua call: a large event is written in parts so no single script holds Redis
#: for long: every worker's Redis call waits behind a running script. The event's
#: idempotency key is recorded with the last part.
WRITE_CHUNK = 200
#: Numbers per `audit` log line: a line per number costs a bulk accept much of its CPU, and
#: a 100,000-row import would write 100,000 lines.
AUDIT_LINE_NUMBERS = 100


def phone_hash(e164: str) -> str:
    """A short hash of a number: logs correlate a masked number without holding it."""
    return hashlib.sha256(e164.encode()).hexdigest()[:16]


def _write(ctx: Context, plan: _Plan, *, force: bool = False) -> AcceptOutcome:
    """Write an event: one script call, or parts of WRITE_CHUNK numbers. The first part
    reserves the idempotency key with the body's hash and the last records it complete, so
    a different body under the same key is refused from the first part on, and a retry of
    an event cut short finishes it under its first event id. `force`: a keyless repeat
    taken as a new event (see `_swallowed`)."""
    numbers, route, ttl = plan.numbers, plan.route, plan.ttl
    payload = plan.payload
    replication = ctx.replication()
    parts = [numbers[i : i + WRITE_CHUNK] for i in range(0, len(numbers), WRITE_CHUNK)]
    if len(parts) == 1:
        return ctx.store.accept(
            payload, numbers, route, ttl, "once", force=force, replication=replication
        )
    results: list[str] = []
    staged: dict[tuple[str, Action], Staged] = {}
    for i, part in enumerate(parts):
        mode = "reserve" if i == 0 else "record" if i == len(parts) - 1 else "none"
        outcome = ctx.store.accept(
            payload, part, route, ttl, mode, force=force and i == 0, replication=replication
        )
        if outcome.status != "ok":
            return outcome
        payload = {**payload, "id": outcome.event_id}  # a resumed event keeps its first id
        results.extend(outcome.results)
        for batch in outcome.staged:
            # Size before: from the first part that touched the batch; size after and
            # numbers in flight: the last.
            first = staged.get((batch.target, batch.action))
            before = first.before if first else batch.before
            staged[(batch.target, batch.action)] = Staged(
                batch.target, batch.action, batch.count, before, batch.in_flight
            )
    return AcceptOutcome("ok", str(payload["id"]), results, list(staged.values()))


def _swallowed(ctx: Context, plan: _Plan, outcome: AcceptOutcome) -> bool:
    """A keyless add answered as a duplicate of an earlier one while some of its numbers
    are not blocked as it asks now (removed since, or blocked only for a shorter while):
    its key only hashes the body, which repeats when the customer opts out again. It is
    taken as a new event rather than swallowed."""
    if outcome.status != "duplicate" or not plan.derived or plan.payload["action"] != "add":
        return False
    wanted = [n for n, _ in plan.numbers]
    held = ctx.store.blocked_until(
        wanted, int(plan.payload.get("x") or 0), str(plan.payload["source"])
    )
    unblocked = len(wanted) - len(held)
    if unblocked:
        log.info("keyless_repeat_accepted", event_id=outcome.event_id, unblocked=unblocked)
    return unblocked > 0


def accept(ctx: Context, event: Event) -> AcceptResult:
    """Validate, normalise, check idempotency, write the ledger and stage every number for
    every target in one Redis round trip; then enqueue the flushes that are due."""
    with _refusals_counted(event):
        with _store_errors():  # the plan reads the server's clock and live targets
            _refuse_when_backlogged(ctx)
            plan = _plan(ctx, event)
            ctx.ensure_registered()
            outcome = _write(ctx, plan)
            if _swallowed(ctx, plan, outcome):
                outcome = _write(ctx, plan, force=True)
        result, flushes = _answer(ctx, event, plan, outcome)
    if flushes:
        _dispatch(ctx, flushes, result.event_id)
    return result


#: Phones an event may have to be accepted on the event loop; a larger one is normalised
#: in a worker thread so it does not stall every other request of the process.
INLINE_PHONES = 10


async def accept_async(ctx: Context, event: Event) -> AcceptResult:
    """`accept` for an event loop: the same checks and writes, with the Redis round trip
    awaited instead of holding a worker thread. Large events, an event that finds the
    process's targets due to be announced (the first, then one every few minutes) and
    pipelines without an asyncio client take `accept` in a worker thread."""
    aio = ctx.async_accept
    if aio is None or len(event.phones) > INLINE_PHONES:
        return await anyio.to_thread.run_sync(accept, ctx, event)
    with _refusals_counted(event), _store_errors():
        _refuse_when_backlogged(ctx)  # a look at Redis once a second per process
        due = ctx.announce_due()  # reads the server's clock
    if due:
        return await anyio.to_thread.run_sync(accept, ctx, event)
    with _refusals_counted(event):
        with _store_errors():
            plan = _plan(ctx, event)
            outcome = await aio.accept(plan.payload, plan.numbers, plan.route, plan.ttl)
        if outcome.status == "duplicate" and plan.derived:
            # Maybe a keyless repeat to take as new (`_swallowed`): rare, so in a thread.
            return await anyio.to_thread.run_sync(accept, ctx, event)
        result, flushes = _answer(ctx, event, plan, outcome)
    if flushes:
        # Enqueueing is broker I/O through a sync client; most events enqueue nothing.
        await anyio.to_thread.run_sync(_dispatch, ctx, flushes, result.event_id)
    return result


@contextmanager
def _refusals_counted(event: Event) -> Iterator[None]:
    try:
        yield
    except AcceptError as exc:
        if exc.reason != "idempotency_conflict":  # counted where it is found
            metrics.EVENTS.labels(event.source[:64], exc.reason).inc()
        raise


@contextmanager
def _store_errors() -> Iterator[None]:
    """Redis could not take the event (or not on enough replicas): the sender retries (503)."""
    try:
        yield
    except ReplicationError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    except redis.RedisError as exc:
        raise StoreUnavailableError(f"Redis unavailable: {type(exc).__name__}") from exc


def _dispatch(ctx: Context, flushes: list[Flush], event_id: str) -> None:
    try:
        dispatch(ctx, flushes)
    except Exception as exc:  # noqa: BLE001
        # The numbers are durably staged; the beat sweep flushes them if this failed.
        log.warning("schedule_failed", error=type(exc).__name__, event_id=event_id)


@dataclass(frozen=True)
class _Plan:
    """An event checked and normalised: what to write, and the answer for each phone."""

    results: list[PhoneResult]
    numbers: list[tuple[str, str]]  # (e164, label), each number once
    payload: dict[str, Any]
    route: dict[str, Any]  # which live targets it goes to (Context.route)
    effective_ms: int
    ttl: int  # of the idempotency key, seconds
    derived: bool = False  # the key hashes the body (the sender gave none)


def _plan(ctx: Context, event: Event) -> _Plan:
    settings = ctx.settings
    now_ms = ctx.store.now_ms()
    # `rs` keeps the sources behind a block one a line: a line break (or any control
    # character) in a source would read back as other sources than the one accept routed by.
    source = event.source
    if not source or len(source) > 64 or "|" in source or ":" in source or not source.isprintable():
        raise AcceptError(
            "bad_source", "source must be 1-64 printable characters without ':' or '|'"
        )
    if event.action is Action.REMOVE and event.occurred_at is None:
        # An old CRM list re-imported must never undo opt-outs made since it was exported.
        raise AcceptError(
            "remove_needs_occurred_at", "a remove must say when it happened (occurred_at)"
        )
    if len(event.phones) > settings.max_phones_per_request:
        raise AcceptError(
            "too_many_phones",
            f"at most {settings.max_phones_per_request} phones per event",
        )

    region = event.region or settings.region_for(event.source)
    own = ctx.own_numbers
    results: list[PhoneResult] = []
    numbers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for phone in event.phones:
        normal = normalise(phone.raw, region, event.convention, own)
        if isinstance(normal, Rejected):
            results.append(PhoneResult(phone.raw, "rejected", reason=normal.reason))
            continue
        assert isinstance(normal, Normalised)
        results.append(PhoneResult(phone.raw, "accepted", normal.e164, flags=normal.flags))
        if normal.e164 not in seen:
            seen.add(normal.e164)
            numbers.append((normal.e164, phone.name[:100]))
    if not numbers:
        raise AcceptError("no_valid_phones", "no phone in the event is a phone number")

    if event.occurred_at is not None and _ms(event.occurred_at) < _ms(EARLIEST):
        # .NET's DateTime.MinValue, Go's zero time, 0 seconds since 1970: an unset clock,
        # not a time. Taken as given, an add would lose to any remove and stay unblocked.
        raise AcceptError(
            "occurred_at_out_of_range",
            f"occurred_at {event.occurred_at.isoformat()} is before "
            f"{EARLIEST.date().isoformat()}: send the time of the opt-out, or leave it out "
            "for an add (the time of receipt is used)",
        )
    occurred_ms = _ms(event.occurred_at) if event.occurred_at else now_ms
    # An add may be a little ahead of our clock (the sender's runs fast). A remove never:
    # dated ahead, it would beat every opt-out received until then (each is dated at its
    # receipt), and a remove sent in local time without an offset is hours ahead.
    ahead_ms = int(settings.clock_skew_seconds * 1000) if event.action is Action.ADD else 0
    effective_ms = min(occurred_ms, now_ms + ahead_ms)
    expires_ms = _ms(event.expires_at) if event.expires_at else 0
    if expires_ms and expires_ms <= now_ms:
        raise AcceptError("expires_in_past", "expires_at is already past")

    canonical = _canonical(event)
    body_hash = hashlib.sha256(canonical.encode()).hexdigest()
    derived = event.idempotency_key is None
    key = event.idempotency_key or body_hash
    if len(key) > 200:
        raise AcceptError("bad_idempotency_key", "idempotency_key is at most 200 characters")
    call = call_context(event.context)
    route = ctx.route(event.source, event.action, call is not None)
    payload = {
        # 80 random bits as 20 hex digits: unique among billions of events, and 12 bytes
        # shorter than a UUID's 32 in every number's ledger hash (`e`).
        "id": secrets.token_hex(10),
        "source": event.source,
        "key": key,
        "hash": body_hash,
        "action": event.action.value,
        "t": effective_ms,
        "x": expires_ms,
        "reason": event.reason[:200],
        "ctx": event.context or None,
        "cctx": json.dumps(call, sort_keys=True) if call else None,
    }
    # Lua reads JSON null as a truthy sentinel: absent is the only safe "none".
    payload = {k: v for k, v in payload.items() if v is not None}
    # A key the sender chose is theirs to repeat for as long as they like; one derived from
    # the body only absorbs retries, and the same body days later is a new opt-out.
    if derived:
        ttl = max(1, int(settings.derived_key_ttl_hours * 3600))
    else:
        ttl = settings.idempotency_ttl_days * 86400
    return _Plan(results, numbers, payload, route, effective_ms, ttl, derived)


def _answer(
    ctx: Context, event: Event, plan: _Plan, outcome: AcceptOutcome
) -> tuple[AcceptResult, list[Flush]]:
    """Count, log and answer what the store did; and the flushes it calls for."""
    results, numbers = plan.results, plan.numbers
    for r in results:
        if r.status == "rejected":
            metrics.REJECTED.labels(event.source, r.reason or "unknown").inc()
    if outcome.status == "conflict":
        metrics.EVENTS.labels(event.source, "idempotency_conflict").inc()
        raise AcceptError(
            "idempotency_conflict",
            f"idempotency key already used with a different body (event {outcome.event_id})",
        )
    duplicate = outcome.status == "duplicate"
    metrics.EVENTS.labels(event.source, "duplicate" if duplicate else "accepted").inc()
    if not duplicate:
        metrics.ACCEPTED.labels(event.source).inc(len(numbers))
    flushes: list[Flush] = []
    if not duplicate:
        ledger_results = iter(outcome.results)
        by_number = {n: next(ledger_results) for n, _ in numbers}
        results = [
            PhoneResult(r.input, r.status, r.phone, r.reason, r.flags, by_number[r.phone])
            if r.phone
            else r
            for r in results
        ]
        for start in range(0, len(numbers), AUDIT_LINE_NUMBERS):
            audit_log.info(
                "audit",
                event_id=outcome.event_id,
                source=event.source,
                action=event.action.value,
                occurred_ms=plan.effective_ms,
                numbers=[
                    {"phone": mask(n), "phone_sha256": phone_hash(n), "ledger": by_number[n]}
                    for n, _ in numbers[start : start + AUDIT_LINE_NUMBERS]
                ],
            )
        flushes = due_flushes(ctx, outcome.staged)
    log.info(
        "accepted",
        event_id=outcome.event_id,
        source=event.source,
        action=event.action.value,
        numbers=len(numbers),
        rejected=sum(1 for r in results if r.status == "rejected"),
        duplicate=duplicate,
    )
    return AcceptResult(outcome.event_id, duplicate, results), flushes


#: The call-record fields a call-linked provider (Weya) needs to accept an opt-out.
CALL_FIELDS = ("batchId", "requestUUID", "type")


def call_context(context: dict[str, Any]) -> dict[str, str] | None:
    """The event's call record reference, when it has one (batchId and requestUUID)."""
    if not context.get("batchId") or not context.get("requestUUID"):
        return None
    return {k: str(context[k]) for k in CALL_FIELDS if context.get(k)}
