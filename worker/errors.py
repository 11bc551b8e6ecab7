"""Errors a provider call can end in, and how the pipeline treats each.

ProviderError            a whole request failed; `reason` is a short machine-readable word
├── RetryableError       5xx, timeout, 429 (with `retry_after`), an answer we cannot read
└── PermanentError       4xx or a vendor code that no retry will fix; a chunk is split
    └── AuthError        401/403, bad API code, IP allow-list: the provider is paused and
                         its numbers stay staged; `setting` names what to fix
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider request failed as a whole."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RetryableError(ProviderError):
    """Trying again later may succeed; `retry_after` is the provider's own wait, in seconds."""

    def __init__(
        self,
        reason: str,
        detail: str = "",
        retry_after: float | None = None,
        retry_window: float | None = None,
    ) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after
        self.retry_window = retry_window


class PermanentError(ProviderError):
    """The request as sent will never succeed."""


class AuthError(PermanentError):
    """The provider refused our credentials or our address: pause it, lose nothing."""

    def __init__(self, reason: str, detail: str = "", setting: str = "") -> None:
        super().__init__(reason, detail)
        self.setting = setting
