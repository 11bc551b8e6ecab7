"""Choosing dead letters (by id or filter) and their ids as operators write them, shared by
the CLI and the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from worker.domain.errors import OptoutError

#: How the store keys a dead letter (and a retry): ``{target}|{e164}``. Lua reads only this.
_STORED_SEP = "|"


class ChoiceError(OptoutError, reason="not_a_dead_letter_id"):
    """An operator's choice that names nothing: an id not of the form TARGET:NUMBER, or a
    phone that is not a phone number (`reason`: the number's rejection reason)."""


def external_id(member: str) -> str:
    """A dead letter's id as it is shown and taken: ``voicenter:+972501234567``,
    ``phonely:agent1:+972501234567``. The store's ``|`` is a pipe to a shell; ``:`` and
    ``+`` need no quoting in bash or zsh."""
    target, sep, phone = member.partition(_STORED_SEP)
    return f"{target}:{phone}" if sep else member


def internal_id(given: str, region: str) -> str:
    """The store's member for an id an operator gave: ``TARGET:NUMBER``, or the old
    ``TARGET|NUMBER`` (scripts written before); the number national or E.164."""
    if _STORED_SEP in given:
        target, _, phone = given.partition(_STORED_SEP)  # a target never holds a '|'
    else:
        # Targets hold ':' (phonely:agent1), a number never does: split at the last one.
        target, _, phone = given.rpartition(":")
    if not target or not phone:
        raise ChoiceError(
            f"{given!r} is not a dead-letter id: TARGET:NUMBER, e.g. voicenter:+972501234567"
        )
    return f"{target}{_STORED_SEP}{e164(phone, region, f'the number of id {given!r}')}"


def e164(phone: str, region: str, what: str = "phone") -> str:
    """A number an operator gave (national in `region`, or E.164) as the store keeps it;
    ChoiceError naming `what` and the reason when it is not a phone number."""
    # phonenumbers is slow to import: only commands that take a number pay for it.
    from worker.domain.phones import Rejected, normalise

    normal = normalise(phone, region)
    if isinstance(normal, Rejected):
        raise ChoiceError(f"{what} {phone!r} is not a phone number: {normal.reason}", normal.reason)
    return normal.e164


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

    def in_store_terms(self, region: str) -> DeadLetterFilter:
        """The filter as the store keeps dead letters: ids as its members, the phone in
        E.164 (`0561111111` means the national number: matching it as written would
        silently match nothing); ChoiceError for an id or a phone that names none."""
        phone = e164(self.phone, region) if self.phone else self.phone
        return replace(self, phone=phone, ids=tuple(internal_id(i, region) for i in self.ids))

    def matches(self, entry: dict[str, Any], now_ms: int) -> bool:
        """Whether a stored entry (store terms: see in_store_terms) is chosen."""
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
