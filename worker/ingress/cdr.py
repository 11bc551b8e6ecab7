"""Voicenter CDRs: decode one, decide whether it is an opt-out, and whose number it is.

The API (its documentation, "Voicenter CDR notification"): There is no OPT_OUT status: an
opt-out is an `IVR` entry on a configured layer whose `Dtmf` is the configured key, or a
configured `CustomData` value. The customer is chosen by call type from a configurable table
(`target` on outbound legs, `callerPhone`/`caller` on inbound ones); a type the table does not
know is kept for review, never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from config import Settings
from worker.domain.errors import OptoutError
from worker.domain.phones import Convention, Normalised, normalise
from worker.ops import metrics
from worker.pipeline.accept import EARLIEST, Event, PhoneInput
from worker.providers.base import Action
from worker.state.replication import Replication
from worker.state.store import Store

log = structlog.get_logger("optout.cdr")
SOURCE = "voicenter"


class UnparseableCdrError(OptoutError, reason="unparseable_cdr"):
    """Not a CDR we can read (Voicenter's `Err: 1`)."""


@dataclass(frozen=True)
class Ignored:
    """A CDR that is not an opt-out: acknowledged and counted, nothing queued."""

    reason: str = "not_an_optout"


@dataclass(frozen=True)
class Review:
    """An opt-out we cannot attribute safely: kept for a person to look at."""

    reason: str
    detail: str = ""
    cdr: dict[str, Any] = field(default_factory=dict)


def decode(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A CDR as a dict; form posts carry `IVR` and `CustomData` as JSON strings."""
    cdr = dict(raw)
    for key in ("IVR", "CustomData"):
        value = cdr.get(key)
        if isinstance(value, str):
            try:
                cdr[key] = json.loads(value) if value.strip() else None
            except ValueError as exc:
                raise UnparseableCdrError(f"{key} is not JSON") from exc
    call_id = cdr.get("ivruniqueid")
    if not isinstance(call_id, str | int) or not str(call_id).strip():
        raise UnparseableCdrError("ivruniqueid is missing")
    if cdr.get("IVR") is not None and not isinstance(cdr["IVR"], list):
        raise UnparseableCdrError("IVR must be a list")
    if cdr.get("CustomData") is not None and not isinstance(cdr["CustomData"], dict):
        raise UnparseableCdrError("CustomData must be an object")
    return cdr


def _optout_trigger(cdr: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
    key = settings.voicenter_optout_dtmf
    layers = set(settings.voicenter_optout_layers)
    if key:
        for entry in cdr.get("IVR") or []:
            if not isinstance(entry, dict) or str(entry.get("Dtmf", "")).strip() != key:
                continue
            names = {
                str(entry[k]) for k in ("layer_id", "layer_name", "layer_number") if k in entry
            }
            if layers and not names & layers:
                continue
            return {
                "layer": entry.get("layer_name") or entry.get("layer_id"),
                "layer_id": entry.get("layer_id"),
                "dtmf": key,
            }
    custom = cdr.get("CustomData") or {}
    for name, wanted in settings.voicenter_optout_customdata.items():
        if str(custom.get(name, "")) == wanted:
            return {"custom_data": name}
    return None


def interpret(
    cdr: dict[str, Any], settings: Settings, own_numbers: frozenset[str]
) -> Event | Ignored | Review:
    """Turn a decoded CDR into an opt-out event, or say why not."""
    trigger = _optout_trigger(cdr, settings)
    if trigger is None:
        return Ignored()
    call_type = str(cdr.get("type") or "")
    if str(cdr.get("direction") or "") == "internal":
        return Review("internal_call", "an internal call has no customer", cdr)
    fields = settings.voicenter_call_types.get(call_type)
    if fields is None:
        return Review("unknown_call_type", f"type {call_type!r} is not in the table", cdr)
    region = settings.region_for(SOURCE)
    chosen: str | None = None
    refused = []
    for name in fields:
        value = cdr.get(name)
        if value in (None, ""):
            continue
        result = normalise(value, region, Convention.NATIONAL, own_numbers)
        if isinstance(result, Normalised):
            chosen = str(value)
            break
        refused.append(f"{name}: {result.reason}")
    if chosen is None:
        return Review("no_customer_number", "; ".join(refused) or "fields empty", cdr)
    occurred = call_time(cdr.get("time"))
    what = f"layer {trigger['layer']}" if "layer" in trigger else trigger["custom_data"]
    return Event(
        source=SOURCE,
        action=Action.ADD,
        phones=[PhoneInput(chosen)],
        reason=f"voicenter opt-out ({what})",
        idempotency_key=str(cdr["ivruniqueid"]),
        occurred_at=occurred,
        convention=Convention.NATIONAL,
        region=region,
        context={
            "callId": str(cdr["ivruniqueid"]),
            "time": cdr.get("time"),
            "type": call_type,
            "direction": cdr.get("direction"),
            **trigger,
        },
        body=cdr,
    )


def book(
    store: Store, outcome: Event | Ignored | Review, replication: Replication | None = None
) -> Event | None:
    """Count a CDR's outcome (Redis and Prometheus) and keep a review case for a person (on
    `replication`'s replicas before it returns: the sender is told it is kept, and will not
    send it again); answer the event still to accept, if any. Every CDR ingress calls this."""
    if isinstance(outcome, Event):
        metrics.CDRS.labels("optout").inc()
        return outcome
    metrics.CDRS.labels(outcome.reason).inc()
    store.count("voicenter_cdr", outcome.reason)
    if isinstance(outcome, Review):
        pushed_out = store.keep_for_review(
            SOURCE,
            {"reason": outcome.reason, "detail": outcome.detail, "cdr": outcome.cdr},
            replication=replication,
        )
        log.warning("cdr_review", reason=outcome.reason, call_id=outcome.cdr.get("ivruniqueid"))
        for old in pushed_out:
            # The queue is full: the oldest case leaves it unread. Its call id in the logs
            # is what is left to find the opt-out by.
            log.error(
                "review_overflowed",
                reason=old.get("reason"),
                call_id=(old.get("cdr") or {}).get("ivruniqueid"),
                received_ms=old.get("at"),
            )
    return None


#: CDR fields that may hold the customer's number whatever the call type (the call-type
#: table's fields are looked at too).
NUMBER_FIELDS = ("target", "callerPhone", "caller")


@dataclass(frozen=True)
class Candidate:
    """A number a CDR kept for review holds: the field, its value, and the number it reads
    as (E.164), or why it is not one."""

    field: str
    value: str
    phone: str | None = None
    rejected: str | None = None


def candidates(
    cdr: Mapping[str, Any], settings: Settings, own_numbers: frozenset[str]
) -> list[Candidate]:
    """The numbers a person may choose the customer from, each field once: the call type's
    fields first, then the other fields that hold numbers."""
    table = settings.voicenter_call_types.get(str(cdr.get("type") or ""), [])
    others = [f for fields in settings.voicenter_call_types.values() for f in fields]
    region = settings.region_for(SOURCE)
    out: list[Candidate] = []
    for name in dict.fromkeys([*table, *NUMBER_FIELDS, *others]):
        value = cdr.get(name)
        if value in (None, "") or isinstance(value, dict | list):
            continue
        result = normalise(value, region, Convention.NATIONAL, own_numbers)
        if isinstance(result, Normalised):
            out.append(Candidate(name, str(value), phone=result.e164))
        else:
            out.append(Candidate(name, str(value), rejected=result.reason))
    return out


def call_time(value: Any) -> datetime | None:
    """The CDR's call time; none (the time of receipt is used) when it is missing, not a
    time, or an unset clock (before 2000: Voicenter cannot be asked to send it again)."""
    try:
        when = datetime.fromtimestamp(float(value), tz=UTC) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return when if when is not None and when >= EARLIEST else None
