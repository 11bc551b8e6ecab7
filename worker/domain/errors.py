"""The root of the domain errors: what went wrong, never how a transport answers it."""

from __future__ import annotations

from typing import Any

# Provider errors (worker.providers.errors) are a family apart: they say how a call to a
# provider failed and decide what becomes of each number in it, not why an input is refused.


class OptoutError(Exception):
    """A refusal or failure the service explains: `reason`, a short word for programs (an API
    body's `error`, a metric's label, a parked message's header), and `message`, a sentence
    for people. No HTTP status: the HTTP layer maps reasons to statuses in one place."""

    reason: str = "error"

    def __init_subclass__(cls, reason: str | None = None, **kwargs: Any) -> None:
        # A class that is a single kind of error names it where it is declared:
        # `class UnparseableCdrError(OptoutError, reason="unparseable_cdr")`.
        super().__init_subclass__(**kwargs)
        if reason is not None:
            cls.reason = reason

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
