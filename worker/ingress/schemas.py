"""The shapes opt-outs arrive in, and how each becomes an accept Event (API, webhooks, broker)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.domain.phones import Convention
from worker.pipeline.accept import Event, PhoneInput
from worker.providers.base import Action


class PhoneObject(BaseModel):
    """A phone with an optional label (Voicenter shows it as the blacklist entry's name)."""

    model_config = ConfigDict(extra="forbid")
    phone: str | int
    name: str = Field(default="", max_length=100)


class OptoutRequest(BaseModel):
    """An opt-out (add) or an opt-in (remove) for one or more phones."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "action": "add",
                    "phones": ["+972501234567", {"phone": "0527654321", "name": "Dana"}],
                    "source": "crm",
                    "reason": "customer asked by email",
                    "idempotency_key": "crm-ticket-8812",
                    "occurred_at": "2026-11-22T10:00:00Z",
                }
            ]
        },
    )
    action: Literal["add", "remove"]
    phones: list[str | int | PhoneObject] = Field(min_length=1)
    source: str = Field(
        default="api", min_length=1, max_length=64, pattern=r"^[^:|\x00-\x1f\x7f]+$"
    )
    reason: str = Field(default="", max_length=200)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    occurred_at: datetime | None = None
    expires_at: datetime | None = None


class DncTrigger(BaseModel):
    """A voice-AI platform's call-record DNC trigger (Weya's shape)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "phoneNumber": "12125551234",
                    "batchId": "64e5f12345abcdef98765432",
                    "requestUUID": "550e8400-e29b-41d4-a716-446655440000",
                    "type": "customer_request",
                }
            ]
        },
    )
    phoneNumber: str | int = Field(description="With country code; `+` optional")  # noqa: N815
    batchId: str = Field(min_length=1, max_length=200)  # noqa: N815
    requestUUID: str = Field(min_length=1, max_length=200)  # noqa: N815
    type: str | None = Field(default=None, max_length=100)


def optout_event(body: OptoutRequest, default_source: str | None = None) -> Event:
    """An `/v1/optouts` body (or a broker message of that shape) as an accept Event."""
    phones = [
        PhoneInput(p.phone, p.name) if isinstance(p, PhoneObject) else PhoneInput(p)
        for p in body.phones
    ]
    source = body.source if "source" in body.model_fields_set else default_source or body.source
    return Event(
        source=source,
        action=Action(body.action),
        phones=phones,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
        occurred_at=body.occurred_at,
        expires_at=body.expires_at,
        convention=Convention.NATIONAL,
        body=body.model_dump(mode="json"),
    )


def dnc_event(body: DncTrigger) -> Event:
    """A DNC trigger as an accept Event: the number carries its country code, and the call
    context travels with it."""
    return Event(
        source="dnc",
        action=Action.ADD,
        phones=[PhoneInput(body.phoneNumber)],
        reason=body.type or "dnc trigger",
        idempotency_key=body.requestUUID,
        convention=Convention.INTERNATIONAL,
        context={k: v for k, v in body.model_dump().items() if k != "phoneNumber" and v},
        body=body.model_dump(mode="json"),
    )
