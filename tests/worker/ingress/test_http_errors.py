"""The one table from an error's reason to its HTTP status, and the body an error makes."""

from __future__ import annotations

import json

import pytest

from worker.domain.errors import OptoutError
from worker.ingress.http_errors import RefusedError, answer, status_of
from worker.pipeline.accept import AcceptError, StoreUnavailableError


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RefusedError("unauthorized", "missing or wrong admin token"), 401),
        (RefusedError("admin_disabled", "the admin API is off"), 503),
        (AcceptError("idempotency_conflict", "key used with another body"), 409),
        (AcceptError("too_many_phones", "at most 3 phones per event"), 413),
        (StoreUnavailableError("Redis unavailable: ConnectionError"), 503),
        (AcceptError("bad_source", "source must be ..."), 422),
        (AcceptError("remove_needs_occurred_at", "a remove must say when"), 422),
        (AcceptError("no_valid_phones", "no phone in the event is a phone number"), 422),
        (AcceptError("occurred_at_out_of_range", "occurred_at ... is before 2000"), 422),
        (AcceptError("expires_in_past", "expires_at is already past"), 422),
        (AcceptError("bad_idempotency_key", "at most 200 characters"), 422),
    ],
    ids=lambda value: getattr(value, "reason", str(value)),
)
def test_each_reason_has_its_status(error: OptoutError, status: int) -> None:
    assert status_of(error) == status
    assert answer(error).status_code == status


def test_an_error_answers_with_its_reason_and_message() -> None:
    response = answer(AcceptError("expires_in_past", "expires_at is already past"))
    assert response.body == b'{"error":"expires_in_past","message":"expires_at is already past"}'
    assert "retry-after" not in response.headers


def test_a_503_says_when_to_retry() -> None:
    response = answer(StoreUnavailableError("Redis unavailable: ConnectionError"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert json.loads(response.body) == {
        "error": "store_unavailable",
        "message": "Redis unavailable: ConnectionError",
    }
