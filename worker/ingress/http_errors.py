"""How the HTTP layer answers errors: the status of each error's reason, in one place."""

from __future__ import annotations

from typing import Any

from worker.domain.errors import OptoutError
from worker.runtime.fastjson import JSONResponse


class RefusedError(OptoutError):
    """The HTTP layer turns a request away before any work: no or a wrong token
    (`unauthorized`), or the admin API is off (`admin_disabled`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason)


#: Every reason not here is the sender's to fix in the request: 422.
STATUS_BY_REASON = {
    "unauthorized": 401,
    "not_found": 404,
    "idempotency_conflict": 409,
    "accepted_for_another_number": 409,
    "too_many_phones": 413,
    "store_unavailable": 503,  # the sender retries (Retry-After)
    "audit_backlog": 503,  # the archive is far behind: the sender retries
    "admin_disabled": 503,
}


def status_of(error: OptoutError) -> int:
    return STATUS_BY_REASON.get(error.reason, 422)


def error_response(status: int, reason: str, message: str, **extra: Any) -> JSONResponse:
    """The API's error body, `{"error": reason, "message": ...}`; a 503 says when to retry."""
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(
        {"error": reason, "message": message, **extra}, status_code=status, headers=headers
    )


def answer(error: OptoutError) -> JSONResponse:
    return error_response(status_of(error), error.reason, error.message)
