"""The review queue: inputs kept for a person, listed, accepted as opt-outs or dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from worker.domain.errors import OptoutError
from worker.domain.phones import Normalised, normalise
from worker.ingress import cdr as cdrs
from worker.ops.views import iso
from worker.pipeline.accept import AcceptError, Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.bookkeeping import KeptReview

audit_log = structlog.get_logger("optout.audit")


class ReviewError(OptoutError):
    """A review action refused: `reason` says why (not_found, choose_phone, not_a_candidate,
    a phone's rejection reason, accepted_for_another_number)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason)


def sources(ctx: Context) -> list[str]:
    """Every source with a review queue: those that kept a case, and Voicenter's, which
    kept cases before sources were recorded."""
    return sorted(ctx.store.review_sources() | {cdrs.SOURCE})


def waiting(ctx: Context) -> dict[str, int]:
    """Cases waiting per source."""
    return ctx.store.reviews_waiting(sources(ctx))


def kept(ctx: Context, source: str | None = None) -> list[KeptReview]:
    """The cases waiting, oldest first (of one source, or of all)."""
    chosen = [source] if source else sources(ctx)
    cases = [case for s in chosen for case in ctx.store.kept_reviews(s)]
    return sorted(cases, key=lambda case: int(case.entry.get("at") or 0))


def find(ctx: Context, review_id: str) -> KeptReview:
    source = review_id.rpartition("-")[0]
    if source in sources(ctx):
        for case in ctx.store.kept_reviews(source):
            if case.id == review_id:
                return case
    raise ReviewError(
        "not_found", f"no review {review_id} waiting (accepted or dropped already, or mistyped)"
    )


def view(ctx: Context, case: KeptReview, *, full: bool = False) -> dict[str, Any]:
    """A case as the CLI and the API show it; `full`: with the input itself."""
    entry = case.entry
    cdr = _input(case)
    when = cdrs.call_time(cdr.get("time"))
    found = cdrs.candidates(cdr, ctx.settings, ctx.own_numbers) if cdr else []
    out: dict[str, Any] = {
        "id": case.id,
        "source": case.source,
        "received_at": iso(int(entry.get("at") or 0)),
        "reason": entry.get("reason"),
        "detail": entry.get("detail") or None,
        "call_id": _text(cdr.get("ivruniqueid")),
        "call_time": iso(int(when.timestamp() * 1000)) if when else None,
        "call_type": _text(cdr.get("type")),
        "direction": _text(cdr.get("direction")),
        "phones": list(dict.fromkeys(c.phone for c in found if c.phone)),
        "candidates": [{k: v for k, v in vars(c).items() if v is not None} for c in found],
    }
    if full:
        out["input"] = cdr or entry
    return out


def accept_review(
    ctx: Context, review_id: str, phone: str | None, who: str, note: str = ""
) -> dict[str, Any]:
    """Make the opt-out a case was kept for, for the number a person chose (or its only
    candidate), through accept: dated at the call (a later opt-in of the number wins, as
    over any late event; never later than the receipt plus the allowed clock skew),
    idempotent per call, then taken off the queue. Accepting again
    after a crash between the two finds the opt-out made and only takes the case off."""
    case = find(ctx, review_id)
    e164 = _chosen(ctx, case, phone)
    entry = case.entry
    cdr = _input(case)
    call_id = _text(cdr.get("ivruniqueid"))
    # Per call, not per case: Voicenter may send a CDR twice, and both copies are kept.
    key = f"review:{call_id or case.id}"
    received = datetime.fromtimestamp(int(entry.get("at") or 0) / 1000, tz=UTC)
    # A call time ahead of the receipt is the sender's clock, capped as accept caps any add
    # at its receipt: accept's own cap is the moment of this accept, days later maybe, and
    # an opt-out dated then would make the real events until then look stale.
    ahead = timedelta(seconds=ctx.settings.clock_skew_seconds)
    occurred = min(cdrs.call_time(cdr.get("time")) or received, received + ahead)
    context = {
        "review": case.id,
        "by": who,
        "callId": call_id,
        "time": cdr.get("time"),
        "type": cdr.get("type"),
        "direction": cdr.get("direction"),
        "note": note[:200] or None,
    }
    event = Event(
        source=case.source,
        action=Action.ADD,
        phones=[PhoneInput(e164)],
        reason=f"review accepted ({entry.get('reason')})"[:200],
        idempotency_key=key,
        occurred_at=occurred,
        context={k: v for k, v in context.items() if v not in (None, "")},
        body={"review": key, "phone": e164},
    )
    try:
        result = accept(ctx, event)
    except AcceptError as exc:
        if exc.reason == "idempotency_conflict":
            raise ReviewError(
                "accepted_for_another_number",
                f"call {call_id or case.id} was accepted already for another number: "
                f"drop this case, or opt the number out with /v1/optouts ({exc.message})",
            ) from exc
        raise ReviewError(exc.reason, exc.message) from exc
    (answer,) = result.phones
    ledger = answer.ledger  # applied, extended, unchanged or stale; none for a repeat
    record = {"id": case.id, "by": who, "phone": e164, "event_id": result.event_id,
              "call_id": call_id, "ledger": ledger, "note": note[:200] or None}  # fmt: skip
    # A repeat (`duplicate`) is recorded only if it is what takes the case off: the first
    # accept recorded it, unless it stopped before.
    ctx.store.settle_review(case, "accepted", record, always=not result.duplicate)
    audit_log.info(
        "review_accepted", review=case.id, source=case.source, by=who,
        event_id=result.event_id, duplicate=result.duplicate, ledger=ledger, call_id=call_id,
    )  # fmt: skip
    return {
        "id": case.id,
        "phone": e164,
        "event_id": result.event_id,
        "duplicate": result.duplicate,
        "ledger": ledger,
        "occurred_at": iso(int(occurred.timestamp() * 1000)),
    }


def drop_review(ctx: Context, review_id: str, who: str, note: str = "") -> dict[str, Any]:
    """Take a case off the queue without an opt-out; recorded with who and why."""
    case = find(ctx, review_id)
    entry = case.entry
    cdr = _input(case)
    call_id = _text(cdr.get("ivruniqueid"))
    record = {"id": case.id, "by": who, "call_id": call_id, "reason": entry.get("reason"),
              "note": note[:200] or None}  # fmt: skip
    if not ctx.store.settle_review(case, "dropped", record):
        raise ReviewError("not_found", f"no review {review_id} waiting (settled meanwhile)")
    audit_log.info(
        "review_dropped", review=case.id, source=case.source, by=who, call_id=call_id,
        reason=entry.get("reason"), note=note[:200] or None,
    )  # fmt: skip
    return {"id": case.id, "dropped": True}


def _chosen(ctx: Context, case: KeptReview, phone: str | None) -> str:
    """The number to opt out: one of the case's candidates (the customer numbers found in
    its CDR, as `view` lists them), the one given (national in the source's region, or
    E.164) or the only one; never a guess between several, never a number the CDR lacks."""
    phones: list[str] = view(ctx, case)["phones"]
    found = ", ".join(phones) if phones else "none"
    if phone is None or phone == "":
        if len(phones) == 1:
            return phones[0]
        if not phones:
            raise ReviewError(
                "choose_phone",
                "this case has no candidate number (none found in the CDR is a customer's): "
                "drop it, and opt the number out with /v1/optouts if you know it",
            )
        raise ReviewError("choose_phone", f"say which number to opt out (candidates: {found})")
    # Read as the CDR's own numbers were: a national number means the source's region.
    region = ctx.settings.region_for(case.source)
    normal = normalise(phone, region, own_numbers=ctx.own_numbers)
    if not isinstance(normal, Normalised):
        raise ReviewError(normal.reason, f"{phone!r} is not a customer's number: {normal.reason}")
    if normal.e164 not in phones:
        # A typo here would opt out a stranger and leave the caller who asked dialable.
        raise ReviewError(
            "not_a_candidate",
            f"{normal.e164} is not a number found in this case's CDR (candidates: {found}); "
            "a number the CDR lacks is opted out with /v1/optouts, not through a review",
        )
    return normal.e164


def _input(case: KeptReview) -> dict[str, Any]:
    """The CDR a case was kept for ({} for a case of another kind)."""
    cdr = case.entry.get("cdr")
    return cdr if isinstance(cdr, dict) else {}


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
