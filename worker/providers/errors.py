"""Errors a provider call can end in, and how the pipeline treats each.

ProviderError            a whole request failed; `reason` is a short machine-readable word
├── RetryableError       5xx, timeout, 429 (with `retry_after`), an answer we cannot read;
│                        `outage`: the request failed as a whole (5xx, timeout, connection,
│                        429), which says nothing about its numbers: no attempt is spent
└── PermanentError       4xx or a vendor code that no retry will fix; a chunk is split
    └── AuthError        401/403, bad API code, IP allow-list: the provider is paused and
                         its numbers stay staged; `setting` names what to fix

PushInterrupted          a push stopped part-way (credentials refused, lease lost): it
                         carries the answers it had, so they are recorded, not redone
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.providers.base import NumberResult


class ProviderError(Exception):
    """A provider request failed as a whole."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RetryableError(ProviderError):
    """Trying again later may succeed; `retry_after` is the provider's own wait, in seconds.
    `may_land`: the provider may still carry the request out later (a timeout, a 5xx, an
    answer nobody expected), after the next push; by default, a request that failed as a
    whole (`outage`) may."""

    def __init__(
        self,
        reason: str,
        detail: str = "",
        retry_after: float | None = None,
        retry_window: float | None = None,
        *,
        outage: bool = False,
        may_land: bool | None = None,
    ) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after
        self.retry_window = retry_window
        self.outage = outage
        self.may_land = outage if may_land is None else may_land


class PermanentError(ProviderError):
    """The request as sent will never succeed."""


class AuthError(PermanentError):
    """The provider refused our credentials or our address: pause it, lose nothing."""

    def __init__(self, reason: str, detail: str = "", setting: str = "") -> None:
        super().__init__(reason, detail)
        self.setting = setting


class PushInterrupted(Exception):  # noqa: N818 (it carries an error, it is not one)
    """A push stopped before every number was sent; `results` holds the answers it had and
    `cause` why it stopped (an AuthError, or the chunk's lease lost)."""

    def __init__(self, cause: Exception, results: dict[str, NumberResult]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.results = results
