"""Webhook ingress: the Voicenter CDR notification and the call-record DNC trigger.

Each source has its own tokens (OPTOUT_WEBHOOK_TOKENS, two at once during a rotation), sent as
`Authorization: Bearer`, `X-Webhook-Token` or `?token=` for platforms that cannot set headers.
Webhooks only ever add: a remove needs the admin API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from worker.ingress import cdr as cdrs
from worker.ingress.http_errors import RefusedError, status_of
from worker.ingress.schemas import DncTrigger, dnc_event
from worker.ingress.tokens import same_secret
from worker.ops import metrics
from worker.pipeline.accept import AcceptError, AcceptResult, Event, accept_async
from worker.pipeline.context import Context
from worker.runtime.fastjson import JSONResponse

log = structlog.get_logger("optout.webhooks")


def token_ok(ctx: Context, source: str, request: Request) -> bool:
    """Whether the request carries one of the source's tokens (constant-time compare)."""
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    given = (
        (bearer if scheme.lower() == "bearer" else "")
        or request.headers.get("x-webhook-token", "")
        or request.query_params.get("token", "")
    )
    ok = False
    for token in ctx.settings.webhook_tokens.get(source, []):
        # Compare against every token so timing says nothing about which one matched.
        ok |= same_secret(given, token)
    return bool(given) and ok


def _voicenter(status: int, err: int, desc: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"Err": err, "Errdesc": desc, **extra}, status_code=status)


async def _cdr_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = raw.decode("utf-8", errors="strict")
    looks_like_form = "=" in text and not text.lstrip().startswith("{")
    if kind == "application/x-www-form-urlencoded" or (
        kind != "application/json" and looks_like_form
    ):
        return dict(parse_qsl(text, keep_blank_values=True))
    body = json.loads(text)
    if not isinstance(body, dict):
        raise cdrs.UnparseableCdrError("a CDR is a JSON object")
    return body


CDR_EXAMPLE = {
    "ivruniqueid": "2020072818dcDHFJcc804",
    "caller": "0722776772",
    "target": "0501234567",
    "time": 1595960350,
    "duration": 11,
    "type": "Extension Outgoing",
    "direction": "outgoing",
    "status": "ANSWER",
    "IVR": [{"layer_id": 12, "layer_name": "optout", "layer_number": 1, "Dtmf": "9"}],
}


def webhook_router(context: Callable[[], Context]) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/webhooks/voicenter/cdr",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"type": "object"}, "example": CDR_EXAMPLE},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                },
                "required": True,
            }
        },
        responses={
            200: {
                "description": '`{"Err": 0, "Errdesc": "OK"}`: durably accepted, '
                "or acknowledged (not an opt-out / kept for review)"
            },
            400: {"description": "`Err: 1`: unparseable, nothing queued"},
            401: {"description": "missing or wrong token, nothing queued"},
            503: {"description": "`Err: 2`: could not be stored; Voicenter retries"},
        },
    )
    async def voicenter_cdr(request: Request) -> JSONResponse:
        """A Voicenter CDR notification (JSON or form-encoded). An opt-out is a DTMF on the
        configured IVR layer(s) or a configured CustomData value; `ivruniqueid` makes it
        idempotent. A CDR that is not an opt-out is acknowledged and counted; one whose
        customer cannot be told safely is acknowledged and kept for review."""
        ctx = context()
        if not token_ok(ctx, cdrs.SOURCE, request):
            return _voicenter(401, 2, "unauthorized")
        try:
            cdr = cdrs.decode(await _cdr_body(request))
        except (cdrs.UnparseableCdrError, ValueError, UnicodeDecodeError) as exc:
            metrics.CDRS.labels("unparseable").inc()
            return _voicenter(400, 1, f"unparseable: {exc}"[:200])
        outcome = cdrs.interpret(cdr, ctx.settings, ctx.own_numbers)
        try:
            result = await _book_and_accept(ctx, outcome)
            if result is None:
                review = outcome.reason if isinstance(outcome, cdrs.Review) else None
                extra = {"review": review} if review else {}
                return _voicenter(200, 0, "OK", optout=False, **extra)
        except AcceptError as exc:
            return _voicenter(status_of(exc), 2, exc.message)
        except Exception as exc:  # noqa: BLE001
            # Redis down while counting or keeping for review: Voicenter must retry.
            log.warning("cdr_store_failed", error=type(exc).__name__)
            return _voicenter(503, 2, "could not store the CDR; retry")
        return _voicenter(200, 0, "OK", optout=True, event_id=result.event_id,
                          duplicate=result.duplicate)  # fmt: skip

    async def dnc_token(request: Request) -> None:
        # A dependency runs before the body is validated: no token, no schema errors either.
        if not token_ok(context(), "dnc", request):
            raise RefusedError("unauthorized", "missing or wrong webhook token")

    @router.post("/webhooks/dnc", status_code=202, dependencies=[Depends(dnc_token)])
    async def dnc_trigger(body: DncTrigger) -> JSONResponse:
        """A call-record DNC trigger. Idempotent on `requestUUID`; the call context travels
        with the opt-out so call-record providers (Weya) can use it."""
        result = await accept_async(context(), dnc_event(body))
        return JSONResponse(
            {
                "event_id": result.event_id,
                "duplicate": result.duplicate,
                "phone": result.phones[0].as_dict(),
            },
            status_code=202,
        )

    return router


async def _book_and_accept(
    ctx: Context, outcome: Event | cdrs.Ignored | cdrs.Review
) -> AcceptResult | None:
    if isinstance(outcome, Event):
        cdrs.book(ctx.store, outcome)  # an opt-out is only counted, in this process
        return await accept_async(ctx, outcome)
    # Counting an ignored CDR, or keeping one for review, writes to Redis: off the loop.
    await run_in_threadpool(cdrs.book, ctx.store, outcome, ctx.replication())
    return None
