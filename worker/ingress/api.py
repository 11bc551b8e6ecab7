"""The HTTP API: opt-out intake, number lookup, health and readiness."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

import redis
import structlog
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.connection import Connection
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from config import Settings
from worker.archive.archiver import backlog_report
from worker.archive.history import CursorError
from worker.domain.errors import OptoutError
from worker.domain.phones import Rejected, normalise
from worker.ingress.docs import add_docs
from worker.ingress.fast_accept import FastAccept, accepted_body
from worker.ingress.http_errors import RefusedError, answer, error_response
from worker.ingress.middleware import AccessLog, BodyLimit
from worker.ingress.schemas import OptoutRequest, optout_event
from worker.ingress.tokens import same_secret
from worker.ingress.webhooks import webhook_router
from worker.ops import metrics, reviews
from worker.ops.admin_api import admin_router
from worker.ops.deadletters import ChoiceError
from worker.ops.sla import overdue
from worker.ops.views import NUMBER_EXAMPLE, number_view
from worker.pipeline.accept import AcceptError, accept_async
from worker.pipeline.batching import catch_ups
from worker.pipeline.context import Context
from worker.providers import PROVIDERS
from worker.runtime.broker import SentinelOptions, sentinel_options
from worker.runtime.fastjson import JSONResponse
from worker.runtime.redis_clients import primary_or_reason

log = structlog.get_logger("optout.api")

ContextFactory = Callable[[], Context]


ACCEPTED_EXAMPLE = {
    "event_id": "8a818628875441e3a395",
    "duplicate": False,
    "accepted": 1,
    "rejected": 1,
    "phones": [
        {"input": "0501234567", "status": "accepted", "phone": "+972501234567",
         "flags": ["unknown_range"], "ledger": "applied"},
        {"input": "050abc", "status": "rejected", "reason": "contains_letters"},
    ],
}  # fmt: skip


#: The admin token, as OpenAPI's bearer scheme (the docs' Authorize button).
_BEARER = HTTPBearer(auto_error=False, description="OPTOUT_ADMIN_TOKEN")


def _example(value: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"example": value}}}


#: What every `/v1/*` route can answer besides its own: a missing or wrong token, the admin
#: API off, Redis unavailable.
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _example({"error": "unauthorized", "message": "missing or wrong admin token"}),
    503: _example({"error": "store_unavailable", "message": "Redis unavailable"}),
}


def create_api(context: ContextFactory, fast_accept: bool = True) -> FastAPI:
    """The ASGI app; `context` builds (or returns) this process's pipeline context.
    `fast_accept=False` leaves every `/v1/optouts` request to its FastAPI route (the tests
    compare the two)."""
    api = FastAPI(
        title="optout-worker",
        version="0.1.0",
        description="Durable opt-out (Do-Not-Call) intake and propagation to provider "
        "blacklists. `/v1/*` needs the admin token as `Authorization: Bearer`.",
        # Replaced by add_docs: FastAPI's own pages load their scripts from public CDNs.
        docs_url=None,
        redoc_url=None,
    )
    add_docs(api)

    # Innermost of ours (the last added runs first): the body limit and the access log see
    # every request, the fast path's too.
    if fast_accept:
        api.add_middleware(FastAccept, context=context)
    api.add_middleware(BodyLimit, max_bytes=context().settings.max_body_bytes)
    api.add_middleware(AccessLog)
    api.include_router(webhook_router(context))

    # async: a check without I/O must not cost a thread-pool hop on every request.
    async def admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    ) -> None:
        token = context().settings.admin_token
        if token is None:
            raise RefusedError("admin_disabled", "the admin API is off: set OPTOUT_ADMIN_TOKEN")
        given = credentials.credentials if credentials is not None else ""
        if not same_secret(given, token):
            raise RefusedError("unauthorized", "missing or wrong admin token")

    api.include_router(admin_router(context, admin, ADMIN_RESPONSES))

    # These only: any other error (a ConfigError, say) stays a server error.
    @api.exception_handler(AcceptError)
    @api.exception_handler(RefusedError)
    @api.exception_handler(ChoiceError)
    async def _answer(_: Request, exc: OptoutError) -> JSONResponse:
        return answer(exc)

    # Any route that finds Redis unreachable says so, as the accept does: 503 with
    # Retry-After, not a bare 500 (the accept answers its own, with what it wrote).
    @api.exception_handler(redis.RedisError)
    async def _store_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return error_response(503, "store_unavailable", f"Redis unavailable: {type(exc).__name__}")

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        message = "the request does not match the schema"
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json" and any(p["field"].startswith("body") for p in problems):
            # curl -d sends a form by default: the body was never read as JSON.
            message = "send the body as JSON, with Content-Type: application/json"
        return error_response(422, "invalid_request", message, problems=problems)

    # 404, 405 and the like in the documented shape, {"error", "message"}.
    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        word = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        response = error_response(exc.status_code, word, str(exc.detail).lower())
        response.headers.update(exc.headers or {})
        return response

    @api.post(
        "/v1/optouts",
        status_code=202,
        dependencies=[Depends(admin)],
        responses={
            **ADMIN_RESPONSES,
            202: _example(ACCEPTED_EXAMPLE),
            409: _example({"error": "idempotency_conflict", "message": "..."}),
            413: _example({"error": "body_too_large", "message": "..."}),
            422: _example({"error": "remove_needs_occurred_at", "message": "..."}),
        },
    )
    async def post_optouts(body: OptoutRequest) -> JSONResponse:
        """Accept an opt-out (`add`) or opt-in (`remove`). Answers 202 once every accepted
        number is durably staged in Redis; 503 (retry) when it cannot be; 409 when the
        idempotency key was used with another body; a remove needs `occurred_at`."""
        result = await accept_async(context(), optout_event(body))
        return JSONResponse(accepted_body(result), status_code=202)

    @api.get(
        "/v1/numbers/{phone}",
        dependencies=[Depends(admin)],
        responses={
            **ADMIN_RESPONSES,
            200: _example(NUMBER_EXAMPLE),
            422: _example({"error": "too_short"}),
        },
    )
    def get_number(
        phone: str,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before: Annotated[
            str | None,
            Query(description="The page before's `audit_next`, or an ISO 8601 time"),
        ] = None,
    ) -> JSONResponse:
        """A number's desired state, expiry, each provider's status, and its audit history
        newest first (the archive and what Redis holds yet), `limit` entries a page: the
        next page is `before=` the answer's `audit_next` (null: no more). `archive` says
        "ok", or why older entries may be missing (the archive unreachable)."""
        ctx = context()
        normal = normalise(phone, ctx.settings.default_region)
        if isinstance(normal, Rejected):
            return error_response(422, normal.reason, f"not a phone number: {normal.reason}")
        try:
            return JSONResponse(number_view(ctx, normal.e164, limit, before))
        except CursorError as exc:
            return error_response(422, exc.reason, exc.message)

    @api.get("/healthz", responses={200: _example({"status": "ok"})})
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get(
        "/readyz",
        responses={
            200: _example(
                {
                    "status": "ready",
                    "redis": "ok",
                    "redis_primary": "10.0.3.7:6379",
                    "broker": "ok",
                    "paused_providers": {},
                    "open_circuits": {},
                    "audit_backlog": {
                        "entries": 12,
                        "oldest_at": "2026-12-03T21:52:28.412Z",
                        "lag_seconds": 0.8,
                        "alarm": False,
                        "alarm_above": 1000000,
                        "refusing_accepts": False,
                        "limit": 10000000,
                    },
                }
            ),
            503: _example({"status": "not_ready", "redis": "down: ConnectionError"}),
        },
    )
    def readyz() -> JSONResponse:
        """Redis and the broker answer; the Redis primary in use is named (with Sentinel, the
        one the Sentinels name now); paused providers and open circuits (a provider whose
        requests keep failing, held and probed with backoff) are listed."""
        ctx = context()
        checks: dict[str, Any] = {}
        try:
            checks["redis"] = "ok" if ctx.store.ping() else "down"
            checks["paused_providers"] = ctx.store.paused()
            checks["open_circuits"] = ctx.store.open_circuits(PROVIDERS)
            checks["audit_backlog"] = backlog_report(ctx)
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"down: {type(exc).__name__}"  # readiness reports, never raises
        checks["redis_primary"] = primary_or_reason(ctx.store.redis)
        checks["broker"] = broker_check(ctx.settings)
        # Above the alarm it is said here (and logged by the archiver); at the limit accepts
        # are refused, so this API is not ready for them.
        refusing = bool(checks.get("audit_backlog", {}).get("refusing_accepts"))
        ready = checks["redis"] == "ok" and checks["broker"] == "ok" and not refusing
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", **checks},
            status_code=200 if ready else 503,
        )

    @api.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Prometheus exposition: this machine's processes, the counts CLI commands handed
        over, plus gauges read from Redis."""
        ctx = context()
        with contextlib.suppress(redis.RedisError):  # a scrape must not fail on Redis
            metrics.take_over(ctx.store)
        return Response(
            metrics.render(metrics.StateCollector(lambda: state_gauges(ctx))),
            media_type=CONTENT_TYPE_LATEST,
        )

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = _with_whole_examples(FastAPI.openapi(api), api.routes)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _with_whole_examples(schema: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """The OpenAPI document with each route's answer examples as written: FastAPI drops
    every null from them, and a documented shape's `"expires_at": null` is part of it."""
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for status, spec in route.responses.items():
            example = spec.get("content", {}).get("application/json", {}).get("example")
            if example is None:
                continue
            for method in route.methods or ():
                documented = schema["paths"][route.path_format][method.lower()]["responses"]
                documented[str(status)]["content"]["application/json"]["example"] = example
    return schema


def state_gauges(ctx: Context) -> dict[str, float | metrics.Labelled]:
    """What Redis says right now, as numbers for Prometheus."""
    store = ctx.store
    waiting = reviews.waiting(ctx)
    settled: dict[tuple[str, ...], float] = {
        (source, outcome): float(n)
        for source in waiting
        for outcome, n in store.counts_of(f"review:{source}").items()
    }
    oldest = store.oldest_dead_letter_ms()
    dead = sum(store.dead_letter_counts().values())
    staged = sum(sum(c.values()) for c in store.counts(ctx.known_targets()).values())
    backlog = backlog_report(ctx)
    progress: dict[tuple[str, ...], float] = {
        (target, at["stage"]): at["ratio"]
        for target, at in catch_ups(ctx).items()
        if at["ratio"] is not None
    }
    return {
        "redis_up": 1.0,
        "audit_backlog_entries": float(backlog["entries"]),
        "audit_archive_lag_seconds": float(backlog["lag_seconds"]),
        "dead_letters": float(dead),
        "dead_letter_oldest_age_seconds": (store.now_ms() - oldest) / 1000 if oldest else 0.0,
        "staged_or_in_flight_numbers": float(staged),
        "sla_overdue_numbers": float(len(overdue(ctx, ctx.settings.sla_seconds))),
        "blocked_numbers": float(store.blocked_total()),
        "expiry_due_numbers": float(store.expiry_due_count()),
        "catch_up_done_ratio": metrics.Labelled(
            ("target", "stage"),
            progress,
            "How far each catch-up of a target from the ledger is through its pass: the "
            "blocked numbers, then the ledger (from its cursor; 1 at the end of a pass)",
        ),
        "paused_providers": float(len(store.paused())),
        "open_circuits": float(len(store.open_circuits(PROVIDERS))),
        "reviews_waiting": metrics.Labelled(
            ("source",),
            {(s,): float(n) for s, n in waiting.items()},
            "Inputs kept for a person to review, by source",
        ),
        "reviews_total": metrics.Labelled(
            ("source", "outcome"),
            settled,
            "Review cases settled (accepted, dropped) or pushed out by the cap (overflowed)",
            counter=True,
        ),
    }


def broker_check(settings: Settings) -> str:
    """ "ok", or "down: <error>": the broker takes a connection within about a second."""
    url = settings.broker_url
    try:
        options = sentinel_options(url, SentinelOptions.of(settings))
        with Connection(url, connect_timeout=1, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"down: {type(exc).__name__}"  # any broker failure means "not ready"
