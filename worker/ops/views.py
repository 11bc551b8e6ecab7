"""What people and clients read of the store: records in words and ISO 8601 UTC times, one
shape for the HTTP API and the CLI (decoded here only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from worker.ops.deadletters import external_id

if TYPE_CHECKING:
    from worker.pipeline.context import Context

#: The keys the Lua scripts write into audit entries and provider answers, short to keep
#: Redis small (lua/accept.lua, complete.lua, expire.lua, purge.lua, replay.lua,
#: reconcile.lua), and the word each is shown as. A key not here is shown as it is.
WORDS: dict[str, str] = {
    "act": "action",
    "ev": "event_id",  # an event's id, or what changed the ledger: expiry, reconcile
    "src": "source",
    "rsn": "reason",
    "t": "event_time",
    "x": "expires_at",
    "ctx": "context",
    "na": "not_applicable",  # targets the event could not go to (no call record)
    "res": "result",
    "v": "version",
    "prov": "target",
    "out": "outcome",
    "det": "detail",
    "n": "attempts",
    "rs": "sources",
}

#: Fields (as shown) that the store keeps as ms since the epoch; 0 there means none (an
#: `expires_at` of 0: for good).
TIMES = frozenset(
    {"at", "event_time", "expires_at", "first_at", "last_at", "replayed_at", "retry_at"}
)


def iso(ms: int | float | None) -> str | None:
    """A time in ms since the epoch as ISO 8601 UTC (2026-12-03T21:52:28Z, with .123 when
    it has milliseconds); None when unknown."""
    if not ms:
        return None
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    millis = when.microsecond // 1000
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}Z" if millis else "Z")


def words(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An audit entry, a provider's answer or a dead letter as shown: short keys as words,
    times as ISO, in the stored order. A key this module does not know is kept under its own
    name (a script newer than this reader), never dropped; one whose name a short key's word
    took is kept as `raw_{key}`."""
    taken = {WORDS[key] for key in raw if key in WORDS}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = WORDS.get(key) or (f"raw_{key}" if key in taken else key)
        out[name] = _value(name, value)
    return out


def _value(word: str, value: Any) -> Any:
    if word in TIMES:
        return iso(_number(value))
    if word == "version" and isinstance(value, str) and value.isdigit():
        return int(value)  # a dead letter keeps the chunk's text
    if word == "sources" and isinstance(value, str):
        return value.split("\n")  # one source a line (`rs`, as the ledger keeps it)
    return value


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def audit_entry(entry_id: str | None, phone: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """An audit entry as shown (a number's history, an evidence export): its id (the audit
    stream's; None for an entry written before entries had one), the number (None for a
    provider's entry: a pause, a resume), then the entry in words (AUDIT_ENTRY_EXAMPLE)."""
    shown: dict[str, Any] = {"id": entry_id, "phone": phone or None}
    shown.update(words({k: v for k, v in raw.items() if k != "id"}))
    return shown


def dead_letter(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stored dead letter as shown: its id as operators write it (deadletters.external_id),
    the rest in words."""
    shown = words(raw)
    if isinstance(raw.get("id"), str):
        shown["id"] = external_id(raw["id"])
    return shown


def provider_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Where a number stands at one target (Store.provider_view) as shown."""
    shown: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "retry_at_ms":
            shown["retry_at"] = iso(value)
        elif key == "dead_letter":
            shown[key] = dead_letter(value) if value else None
        elif key == "last_answer":
            shown[key] = words(value) if value else None
        else:
            shown[key] = value
    return shown


def number_view(
    ctx: Context, e164: str, limit: int = 50, before: str | None = None
) -> dict[str, Any]:
    """Everything known about one number (`GET /v1/numbers/{phone}`, `optout status`):
    NUMBER_EXAMPLE's shape. `audit`: a page of its history, newest first, merged from the
    archive and the entries Redis still holds (`limit` of them, older than `before`: the
    `audit_next` of the page before); `archive`: ok, or why the page may lack older ones."""
    from worker.archive.history import history

    ledger = ctx.store.ledger(e164)
    providers = ctx.store.provider_view(e164, ctx.known_targets())
    page = history(ctx, e164, limit, before)
    return {
        "phone": e164,
        "known": bool(ledger) or bool(page.entries),
        "state": ledger.get("s", "unknown"),
        "version": int(ledger.get("v", "0") or 0),
        "expires_at": iso(int(ledger.get("x", "0") or 0)),
        "event_time": iso(int(ledger.get("t", "0") or 0)),
        "last_event_id": ledger.get("e"),
        "providers": {target: provider_row(row) for target, row in providers.items()},
        "audit": [audit_entry(e.entry_id or None, e.number, e.raw) for e in page.entries],
        "audit_next": page.next_before,
        "archive": page.archive,
    }


#: A dead letter as shown (`GET /v1/dead-letters` items, `optout dlq list --json`, `dlq show`).
DEAD_LETTER_EXAMPLE: dict[str, Any] = {
    "id": "voicenter:+972501234567",
    "target": "voicenter",
    "provider": "voicenter",
    "phone": "+972501234567",
    "action": "add",
    "reason": "bad_format",
    "last_error": "the provider said the number is not valid",
    "attempts": 1,
    "version": 1,
    "first_at": "2026-12-03T21:52:28.412Z",
    "last_at": "2026-12-03T21:52:28.412Z",
    "events": ["8a818628875441e3a395"],
    "replays": 0,
}

#: One number as shown (`GET /v1/numbers/{phone}`, `optout status --json`).
NUMBER_EXAMPLE: dict[str, Any] = {
    "phone": "+972501234567",
    "known": True,
    "state": "blocked",
    "version": 1,
    "expires_at": None,
    "event_time": "2026-12-03T21:52:27.901Z",
    "last_event_id": "8a818628875441e3a395",
    "providers": {
        "voicenter": {
            "confirmed": "blocked:1", "staged": None, "in_flight_chunk": None,
            "retry_at": None, "attempts": 0, "dead_letter": None, "last_answer": None,
        },
        "phonely:agent1": {
            "confirmed": "?", "staged": None, "in_flight_chunk": None,
            "retry_at": "2026-12-03T21:52:30.412Z", "attempts": 1, "dead_letter": None,
            "last_answer": {"at": "2026-12-03T21:52:28.398Z", "action": "add",
                            "outcome": "retry", "reason": "server_error",
                            "detail": "HTTP 503", "version": 1, "attempts": 1},
        },
    },
    "audit": [
        {"id": "1796334748412-0", "phone": "+972501234567", "at": "2026-12-03T21:52:28.412Z",
         "target": "voicenter", "action": "add", "outcome": "done", "reason": "", "detail": "",
         "version": 1, "attempts": 0},
        {"id": "1796334748398-0", "phone": "+972501234567", "at": "2026-12-03T21:52:28.398Z",
         "target": "phonely:agent1", "action": "add", "outcome": "retry",
         "reason": "server_error", "detail": "HTTP 503", "version": 1, "attempts": 1},
        {"id": "1796334747901-0", "phone": "+972501234567", "at": "2026-12-03T21:52:27.901Z",
         "event_id": "8a818628875441e3a395", "source": "api", "action": "add",
         "reason": "", "event_time": "2026-12-03T21:52:27.901Z", "expires_at": None,
         "result": "applied", "version": 1},
    ],
    "audit_next": None,
    "archive": "ok",
}  # fmt: skip

#: One audit entry as shown (`optout audit export --format jsonl`, `GET /v1/audit`, the
#: items of a number's `audit`): id, phone (None for a provider's own entry), then the
#: entry's fields in words, which differ by kind (accept, push answer, retry, dead letter,
#: replay, purge, expiry, reconcile, pause, resume).
AUDIT_ENTRY_EXAMPLE: dict[str, Any] = NUMBER_EXAMPLE["audit"][-1]
