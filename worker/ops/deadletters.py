"""Selecting dead letters by filter, shared by the CLI and the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operator means; every field left empty matches all."""

    provider: str | None = None
    action: str | None = None
    reason: str | None = None
    phone: str | None = None
    older_than_seconds: float | None = None
    ids: tuple[str, ...] = ()

    def empty(self) -> bool:
        """Nothing chosen: every dead letter matches (an empty value chooses nothing, as
        `matches` reads it: `--provider "$UNSET"` is no choice)."""
        return not (
            self.ids or self.provider or self.action or self.reason or self.phone
            or self.older_than_seconds
        )  # fmt: skip

    def matches(self, entry: dict[str, Any], now_ms: int) -> bool:
        if self.ids and entry.get("id") not in self.ids:
            return False
        if (
            self.provider
            and entry.get("provider") != self.provider
            and (entry.get("target") != self.provider)
        ):
            return False
        if self.action and entry.get("action") != self.action:
            return False
        if self.reason and self.reason not in str(entry.get("reason", "")):
            return False
        if self.phone and entry.get("phone") != self.phone:
            return False
        if self.older_than_seconds is not None:
            age_ms = now_ms - int(entry.get("first_at", now_ms))
            if age_ms < self.older_than_seconds * 1000:
                return False
        return True


def select(
    entries: list[dict[str, Any]], flt: DeadLetterFilter, now_ms: int
) -> list[dict[str, Any]]:
    return [e for e in entries if flt.matches(e, now_ms)]
