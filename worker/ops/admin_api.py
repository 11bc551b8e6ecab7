"""Admin HTTP endpoints for ops: dead letters, reviews, scrubbing a dial list, the blocked list."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from worker.archive.database import ArchiveError
from worker.archive.export import evidence, render
from worker.domain.phones import Normalised, normalise
from worker.ingress.http_errors import error_response, status_of
from worker.ops import reviews
from worker.ops.deadletters import DeadLetterFilter, external_id, internal_id, select
from worker.ops.export import blocked_csv
from worker.ops.views import AUDIT_ENTRY_EXAMPLE, DEAD_LETTER_EXAMPLE, dead_letter
from worker.pipeline import batching as work
from worker.pipeline.context import Context

SCRUB_LIMIT = 10_000


class DeadLetterSelection(BaseModel):
    """Which dead letters: by id, or every one the filters match."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"provider": "voicenter", "reason": "bad_format"},
                {"ids": ["voicenter:+972501234567"], "dry_run": True},
            ]
        },
    )
    ids: list[str] = Field(
        default_factory=list,
        max_length=100_000,
        description="As listed: TARGET:NUMBER (voicenter:+972501234567; the number national "
        "or E.164; the old TARGET|NUMBER too)",
    )
    provider: str | None = None
    action: str | None = None
    reason: str | None = None
    phone: str | None = Field(default=None, description="National or E.164")
    older_than_seconds: float | None = Field(default=None, ge=0)
    all: bool = False
    dry_run: bool = False
    who: str = Field(default="api", max_length=100)

    def filter(self) -> DeadLetterFilter:
        return DeadLetterFilter(
            self.provider, self.action, self.reason, self.phone, self.older_than_seconds,
            tuple(self.ids),
        )  # fmt: skip

    def says_which(self) -> bool:
        """Something chosen, by the same rule as the CLI's (an empty value is no choice)."""
        return self.all or not self.filter().empty()


class ReviewAccept(BaseModel):
    """The number a person chose for a review case, and who chose it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"phone": "0501234567", "who": "dana"}]},
    )
    phone: str | None = Field(
        default=None, max_length=64,
        description="One of the case's candidate numbers (`phones`), national (in the "
        "source's region) or E.164; may be left out when the case has exactly one.",
    )  # fmt: skip
    who: str = Field(default="api", min_length=1, max_length=100)
    note: str = Field(default="", max_length=200)


class ReviewDrop(BaseModel):
    """Who drops a review case, and why."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"who": "dana", "note": "a test call"}]}
    )
    who: str = Field(default="api", min_length=1, max_length=100)
    note: str = Field(default="", max_length=200)


REVIEW_EXAMPLE = {
    "id": "voicenter-3f9c2a71b04e",
    "source": "voicenter",
    "received_at": "2026-11-22T10:00:03Z",
    "reason": "unknown_call_type",
    "detail": "type 'Conference' is not in the table",
    "call_id": "2020072818dcDHFJcc804",
    "call_time": "2026-11-22T10:00:00Z",
    "call_type": "Conference",
    "direction": "outgoing",
    "phones": ["+972501234567", "+972722776772"],
    "candidates": [
        {"field": "target", "value": "0501234567", "phone": "+972501234567"},
        {"field": "caller", "value": "0722776772", "phone": "+972722776772"},
    ],
}


#: What accepting a review case answers when it has no number to opt out.
REVIEW_ACCEPT_REFUSED = {
    "description": "No number to opt out: `choose_phone` (several candidates and none chosen, "
    "or none at all), `not_a_candidate` (the number given is not one of the case's `phones`, "
    "the customer numbers found in its CDR), or the number's rejection reason (`too_short`, "
    "`own_number`, ...)",
    "content": {
        "application/json": {
            "examples": {
                "choose_phone": {
                    "value": {
                        "error": "choose_phone",
                        "message": "say which number to opt out (candidates: +972501234567, "
                        "+972527654321)",
                    }
                },
                "not_a_candidate": {
                    "value": {
                        "error": "not_a_candidate",
                        "message": "+972561111111 is not a number found in this case's CDR "
                        "(candidates: +972501234567, +972527654321); a number the CDR lacks "
                        "is opted out with /v1/optouts, not through a review",
                    }
                },
            }
        }
    },
}


class ScrubRequest(BaseModel):
    """A campaign list to check before dialing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"phones": ["0501234567", "+12125551234"]}]},
    )
    phones: list[str | int] = Field(min_length=1, max_length=SCRUB_LIMIT)


def admin_router(
    context: Callable[[], Context],
    admin: Callable[..., Awaitable[None]],
    responses: dict[int | str, dict[str, Any]],
) -> APIRouter:
    """The ops routes, each behind `admin` (the token check) and documenting `responses`
    (what that check and Redis can answer)."""
    router = APIRouter(dependencies=[Depends(admin)], tags=["ops"], responses=responses)

    @router.get(
        "/v1/dead-letters",
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {"total": 1, "offset": 0, "items": [DEAD_LETTER_EXAMPLE]}
                    }
                }
            }
        },
    )
    def list_dead_letters(
        provider: str | None = None,
        action: str | None = None,
        reason: str | None = None,
        phone: Annotated[str | None, Query(description="National or E.164")] = None,
        older_than_seconds: Annotated[float | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Dead letters, oldest first, filtered and paginated."""
        ctx = context()
        flt = DeadLetterFilter(provider, action, reason, phone, older_than_seconds)
        flt = flt.in_store_terms(ctx.settings.default_region)
        chosen = select(ctx.store.dead_letters(), flt, ctx.store.now_ms())
        items = [dead_letter(e) for e in chosen[offset : offset + limit]]
        return {"total": len(chosen), "offset": offset, "items": items}

    def chosen_ids(ctx: Context, body: DeadLetterSelection) -> list[str]:
        """The store's members of the dead letters chosen (ChoiceError: an id or a phone
        that names none, answered 422)."""
        flt = body.filter().in_store_terms(ctx.settings.default_region)
        entries = select(ctx.store.dead_letters(), flt, ctx.store.now_ms())
        return [str(e["id"]) for e in entries]

    @router.post("/v1/dead-letters/replay")
    def replay_dead_letters(body: DeadLetterSelection) -> JSONResponse:
        """Stage the chosen dead letters again; each leaves the store once delivered.
        Replaying twice pushes once."""
        if not body.says_which():
            return JSONResponse({"error": "no_selection", "message": "give ids, filters or "
                                 "all=true"}, status_code=422)  # fmt: skip
        ctx = context()
        ids = chosen_ids(ctx, body)
        replayed = 0 if body.dry_run else work.replay(ctx, ids, f"api:{body.who}")
        return JSONResponse({"dry_run": body.dry_run, "matched": len(ids), "replayed": replayed,
                             "ids": [external_id(i) for i in ids[:1000]]})  # fmt: skip

    @router.post("/v1/dead-letters/purge")
    def purge_dead_letters(body: DeadLetterSelection) -> JSONResponse:
        """Drop the chosen dead letters (giving up on them); each purge is audited."""
        if not body.says_which():
            return JSONResponse({"error": "no_selection", "message": "give ids, filters or "
                                 "all=true"}, status_code=422)  # fmt: skip
        ctx = context()
        ids = chosen_ids(ctx, body)
        purged = 0 if body.dry_run else ctx.store.purge(ids, f"api:{body.who}")
        return JSONResponse({"dry_run": body.dry_run, "matched": len(ids), "purged": purged})

    @router.delete("/v1/dead-letters/{entry_id:path}")
    def delete_dead_letter(entry_id: str) -> JSONResponse:
        """Drop one dead letter by id, as listed: `voicenter:+972501234567` (the number
        national or E.164; the old `voicenter|+972501234567` too)."""
        ctx = context()
        member = internal_id(entry_id, ctx.settings.default_region)
        purged = ctx.store.purge([member], "api")
        if not purged:
            message = f"no dead letter {external_id(member)}"
            return JSONResponse({"error": "not_found", "message": message}, status_code=404)
        return JSONResponse({"purged": purged})

    @router.get("/v1/reviews", responses={200: _example({"total": 1, "waiting": {
        "voicenter": 1}, "offset": 0, "items": [REVIEW_EXAMPLE]})})  # fmt: skip
    def list_reviews(
        source: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JSONResponse:
        """Inputs kept for a person (CDRs whose customer cannot be told safely: unknown call
        type, internal call, no valid customer number), oldest first, with the candidate
        numbers found in each."""

        def run() -> dict[str, Any]:
            ctx = context()
            cases = reviews.kept(ctx, source)
            page = [reviews.view(ctx, c) for c in cases[offset : offset + limit]]
            return {"total": len(cases), "waiting": reviews.waiting(ctx), "offset": offset,
                    "items": page}  # fmt: skip

        return _answer(run)

    @router.get(
        "/v1/reviews/{review_id}",
        responses={200: _example({**REVIEW_EXAMPLE, "input": {"ivruniqueid": "..."}}),
                   404: _example({"error": "not_found", "message": "no review ..."})},
    )  # fmt: skip
    def show_review(review_id: str) -> JSONResponse:
        """One review case, with the input it was kept for."""
        ctx = context()
        return _answer(lambda: reviews.view(ctx, reviews.find(ctx, review_id), full=True))

    @router.post(
        "/v1/reviews/{review_id}/accept",
        responses={
            200: _example({"id": "voicenter-3f9c2a71b04e", "phone": "+972501234567",
                           "event_id": "8a818628875441e3a395", "duplicate": False,
                           "ledger": "applied", "occurred_at": "2026-11-22T10:00:00Z"}),
            404: _example({"error": "not_found", "message": "no review ..."}),
            409: _example({"error": "accepted_for_another_number", "message": "..."}),
            422: REVIEW_ACCEPT_REFUSED,
        },
    )  # fmt: skip
    def accept_review(review_id: str, body: ReviewAccept | None = None) -> JSONResponse:
        """Opt out the number a person chose for a case (`phone`, one of the case's
        `phones`: the customer numbers found in its CDR, national in the source's region or
        E.164; may be left out when the case has one), through accept like any opt-out:
        dated at the call, so a later opt-in of the number still wins (`ledger: stale`);
        idempotent per call. The number's audit trail records `api:{who}`."""
        given = body or ReviewAccept()
        by = f"api:{given.who}"
        return _answer(
            lambda: reviews.accept_review(context(), review_id, given.phone, by, given.note)
        )

    @router.post(
        "/v1/reviews/{review_id}/drop",
        responses={200: _example({"id": "voicenter-3f9c2a71b04e", "dropped": True}),
                   404: _example({"error": "not_found", "message": "no review ..."})},
    )  # fmt: skip
    def drop_review(review_id: str, body: ReviewDrop | None = None) -> JSONResponse:
        """Take a case off the queue without an opt-out; recorded with `api:{who}` and the
        note."""
        given = body or ReviewDrop()
        by = f"api:{given.who}"
        return _answer(lambda: reviews.drop_review(context(), review_id, by, given.note))

    @router.post("/v1/scrub")
    def scrub(body: ScrubRequest) -> dict[str, Any]:
        """Which of these numbers are blocked (dialers scrub a campaign list before dialing).
        Up to 10,000 per request; numbers that are not phone numbers come back as rejected."""
        ctx = context()
        region = ctx.settings.default_region
        by_input: dict[str, str] = {}
        rejected = []
        for raw in body.phones:
            result = normalise(raw, region)
            if isinstance(result, Normalised):
                by_input[str(raw)] = result.e164
            else:
                rejected.append({"input": raw, "reason": result.reason})
        blocked_set = ctx.store.blocked_among(sorted(set(by_input.values())))
        blocked: list[dict[str, Any]] = []
        dialable: list[dict[str, Any]] = []
        for raw, e164 in by_input.items():
            (blocked if e164 in blocked_set else dialable).append({"input": raw, "phone": e164})
        return {
            "checked": len(body.phones),
            "blocked": blocked,
            "dialable": len(dialable),
            "dialable_phones": dialable,
            "rejected": rejected,
        }

    @router.get("/v1/export", response_class=StreamingResponse)
    def export() -> StreamingResponse:
        """Every blocked number as CSV (`phone,expires_at_ms,updated_ms`), streamed."""
        return StreamingResponse(
            blocked_csv(context()),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="blocked.csv"'},
        )

    @router.get(
        "/v1/audit",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/x-ndjson": {"example": AUDIT_ENTRY_EXAMPLE},
                              "text/csv": {}}},
            422: _example({"error": "choose_entries", "message": "give phone, or since"}),
        },
    )  # fmt: skip
    def audit_export(
        phone: Annotated[str | None, Query(description="National or E.164")] = None,
        since: Annotated[str | None, Query(description="ISO 8601: at or after")] = None,
        until: Annotated[str | None, Query(description="ISO 8601: before")] = None,
        fmt: Annotated[str, Query(alias="format", pattern="^(jsonl|csv)$")] = "jsonl",
    ) -> Response:
        """Audit entries as an evidence file, oldest first, streamed: one number's
        (`phone`), or every entry of a time range (`since`, `until`); JSON Lines (one
        entry a line, as in a number's `audit`) or CSV (the common fields, then the whole
        entry as JSON). From the archive and the entries still waiting in Redis; 503 when
        the archive cannot be read (a file without its archived part would mislead)."""
        ctx = context()
        if phone is None and since is None:
            return error_response(422, "choose_entries", "give phone, or since (and until)")
        number = None
        if phone is not None:
            normal = normalise(phone, ctx.settings.default_region)
            if not isinstance(normal, Normalised):
                return error_response(422, normal.reason, f"not a phone number: {normal.reason}")
            number = normal.e164
        try:
            since_ms, until_ms = _ms("since", since), _ms("until", until)
            rows = evidence(ctx, number, since_ms, until_ms)
            first = next(rows, None)  # the archive answers before the 200 is sent
        except ValueError as exc:
            return error_response(422, "bad_time", str(exc))
        except ArchiveError as exc:
            return error_response(503, exc.reason, exc.message)
        entries = itertools.chain([first] if first is not None else [], rows)
        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        name = f"audit-{(number or 'range').lstrip('+')}.{fmt}"
        return StreamingResponse(
            render(fmt)(entries), media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )  # fmt: skip

    return router


def _ms(name: str, value: str | None) -> int | None:
    """An ISO 8601 query value in ms (UTC when it names no zone)."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _example(value: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"example": value}}}


def _answer(run: Callable[[], dict[str, Any]]) -> JSONResponse:
    """What a review action answers; its refusal as the API's error body (Redis down is
    every route's 503: the API's handler for Redis errors)."""
    try:
        return JSONResponse(run())
    except reviews.ReviewError as exc:
        return error_response(status_of(exc), exc.reason, exc.message)
