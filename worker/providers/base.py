"""The provider Protocol every blacklist adapter implements, and the values it trades in."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from worker.domain.phones import NumberFormat
from worker.providers.errors import PermanentError, RetryableError


class Action(enum.StrEnum):
    """What a push asks of a provider: put a number on its blacklist or take it off."""

    ADD = "add"
    REMOVE = "remove"


class Outcome(enum.StrEnum):
    """A provider's answer for one number."""

    DONE = "done"  # includes "already in that state"
    RETRY = "retry"  # the number's own failure: internal error, missing from the answer
    OUTAGE = "outage"  # its request failed as a whole (5xx, timeout, 429): no attempt spent
    PERMANENT = "permanent"  # bad format and the like: dead-letter it


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the batcher needs to know about a provider, so no provider `if` leaks out."""

    max_batch: int  # numbers per chunk (per request when `bulk`)
    supports_remove: bool
    number_format: NumberFormat
    supports_expiry: bool = False
    needs_call_context: bool = False  # only events tied to a call record go there
    bulk: bool = True  # one request per chunk; else one per number, `concurrency` at once
    concurrency: int = 1
    # The provider keeps a number in one of its lists only (Daktela): an add to one target
    # of ours takes the entry from another, and a remove may delete what another just took.
    one_list: bool = False


@dataclass(frozen=True, slots=True)
class PushItem:
    """One number of a chunk, already in E.164; `name` is an optional label."""

    e164: str
    name: str = ""
    expires_ms: int = 0  # 0: a permanent block
    source: str = ""
    reason: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # call context (batchId, ...)


@dataclass(frozen=True, slots=True)
class NumberResult:
    """A provider's answer for one number of a chunk."""

    outcome: Outcome
    reason: str = ""
    detail: str = ""
    retry_after: float | None = None  # the provider's own wait (seconds), for RETRY
    retry_window: float | None = None  # RETRY for this long, then dead-letter (not attempts)
    # Not done, but the provider may still carry it out later (see RetryableError).
    may_land: bool = False

    @classmethod
    def of(cls, error: RetryableError | PermanentError) -> NumberResult:
        """What a failed request means for each number in it."""
        if isinstance(error, RetryableError):
            outcome = Outcome.OUTAGE if error.outage else Outcome.RETRY
            return cls(
                outcome, error.reason, error.detail, error.retry_after, error.retry_window,
                may_land=error.may_land,
            )  # fmt: skip
        return cls(Outcome.PERMANENT, error.reason, error.detail)


def unexpected(error: Exception) -> NumberResult:
    """What an error outside the provider error family means for each number in the
    request (an answer of a shape no adapter expected, say): the request failed as a
    whole, an outage (no attempt spent; the circuit breaker counts it). Left to escape, it
    would fail the push with nothing recorded, and the chunk would be recovered and pushed
    again, whole, for ever."""
    structlog.get_logger("optout.providers").error(
        "unexpected_provider_error", error=type(error).__name__, exc_info=error
    )
    detail = f"{type(error).__name__}: {error}"[:300]
    return NumberResult(Outcome.OUTAGE, "unexpected_error", detail, may_land=True)


@runtime_checkable
class ListsNumbers(Protocol):
    """A provider that can list what its blacklist holds (for reconciliation)."""

    def list_numbers(self, target: str) -> Iterable[str]:
        """Every number the target's list holds now, in the provider's own format, as the
        provider serves them: a provider that pages its list is read a page at a time
        while the caller goes through it (a reconciliation never holds it whole)."""
        ...


class Provider(Protocol):
    """A provider blacklist. Adapters take their settings and an httpx client; they never
    build a client, read the environment or touch Redis."""

    name: str
    capabilities: Capabilities

    def targets(self) -> list[str]:
        """The blacklists this provider keeps (one, or one per agent / database)."""
        ...

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        """Send one chunk; answer per E.164 number. Raise a ProviderError when the request
        failed as a whole. A number missing from the answer maps to RETRY, never DONE."""
        ...

    def probe(self) -> None:
        """One harmless call that proves the credentials work; raises AuthError if not."""
        ...
