"""Every domain error has the one root: a machine reason and a human message, no HTTP status."""

from __future__ import annotations

import pytest

from config import ConfigError
from worker.domain.errors import OptoutError
from worker.ingress.cdr import UnparseableCdrError
from worker.ingress.consumer import RejectedMessageError
from worker.pipeline.accept import AcceptError, StoreUnavailableError


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        (AcceptError("bad_source", "source must be ..."), "bad_source", "source must be ..."),
        (StoreUnavailableError("Redis unavailable"), "store_unavailable", "Redis unavailable"),
        (UnparseableCdrError("IVR must be a list"), "unparseable_cdr", "IVR must be a list"),
        (RejectedMessageError("not_json"), "not_json", "not_json"),
        (
            RejectedMessageError("unknown_kind", "'bogus'"),
            "unknown_kind",
            "unknown_kind: 'bogus'",  # the parked message's header, as it always was
        ),
        (ConfigError("REDIS_URL is not set"), "bad_config", "REDIS_URL is not set"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_a_domain_error_has_a_reason_and_a_message(
    error: OptoutError, reason: str, message: str
) -> None:
    assert isinstance(error, OptoutError)
    assert (error.reason, error.message, str(error)) == (reason, message, message)
    assert not hasattr(error, "status")


def test_a_class_reason_is_its_own() -> None:
    # Naming a reason on a subclass must not rename its base's or its siblings'.
    assert OptoutError("x").reason == "error"
    assert AcceptError("bad_source", "x").reason == "bad_source"
    assert UnparseableCdrError("x").reason != ConfigError("x").reason
