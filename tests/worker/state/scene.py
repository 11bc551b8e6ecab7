"""Setting the store's scene for its tests: live targets, events accepted, chunks leased,
results answered, read back."""

from __future__ import annotations

import json
import uuid
from typing import Any

from worker.providers.base import Action
from worker.state.records import Chunk, CompleteOptions, ItemResult, OpenChunk
from worker.state.store import Store

N1, N2, N3 = "+972501000001", "+972501000002", "+972501000003"
VOICENTER = {"provider": "voicenter", "add_only": False, "max_batch": 100}
WEYA = {"provider": "weya", "add_only": True, "needs_ctx": True, "max_batch": 100}
OPTIONS = CompleteOptions(
    max_attempts=3,
    backoff_base_ms=1000,
    backoff_cap_ms=8000,
    outage_budget_ms=3_600_000,
    breaker_threshold=2,
    breaker_cap_ms=60_000,
    moved_retry_ms=60_000,
    late_ms=90_000,
)


def live(store: Store, **metas: dict[str, Any]) -> None:
    """Announce targets (default: Voicenter) live for an hour."""
    store.register_targets(metas or {"voicenter": VOICENTER}, 3600)


def event(
    store: Store,
    action: Action,
    *,
    ago_ms: int = 1000,
    expires_in_ms: int = 0,
    source: str = "api",
    key: str | None = None,
    body: str = "body",
) -> dict[str, Any]:
    """An event as accept.lua reads it (worker/pipeline/accept.py builds the same)."""
    now = store.now_ms()
    return {
        "id": uuid.uuid4().hex,
        "source": source,
        "key": key or uuid.uuid4().hex,
        "hash": body,
        "action": action.value,
        "t": now - ago_ms,
        "x": now + expires_in_ms if expires_in_ms else 0,
        "reason": "asked",
    }


def accept(store: Store, action: Action, *numbers: str, **kw: Any) -> list[str]:
    """Accept one event for these numbers; its per-number results."""
    route = {"include": [], "exclude": [], "call": False}
    outcome = store.accept(event(store, action, **kw), [(n, "") for n in numbers], route, 3600)
    assert outcome.status == "ok", outcome
    return outcome.results


def lease(store: Store, action: Action = Action.ADD, target: str = "voicenter") -> Chunk:
    """Claim every staged number of the batch as one chunk and open it."""
    provider = target.split(":", 1)[0]
    claimed = store.claim(
        target, provider, action, size=100, lease_seconds=60, mode="all", linger_ms=0,
        max_chunks=1,
    )  # fmt: skip
    assert claimed.status == "ok" and len(claimed.chunks) == 1, claimed
    return opened(store, claimed.chunks[0]).chunk


def opened(store: Store, chunk_id: str) -> OpenChunk:
    found = store.open_chunk(chunk_id, 60)
    assert found is not None
    return found


def answer(outcome: str, reason: str = "", **kw: Any) -> ItemResult:
    return ItemResult(outcome, reason, **{"jitter": 0.0, **kw})


def all_done(chunk: Chunk) -> dict[str, ItemResult]:
    return {item.e164: answer("done") for item in chunk.items}


def text(raw: Any) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def hget(store: Store, key: str, field: str) -> str | None:
    return text(store.redis.hget(store.prefix + key, field))


def staged(store: Store, target: str = "voicenter", action: Action = Action.ADD) -> list[str]:
    return [
        text(n) or "" for n in store.redis.zrange(store.key("stage", target, action.value), 0, -1)
    ]


def retry_at(store: Store, n: str, target: str = "voicenter") -> int | None:
    score = store.redis.zscore(store.key("retry"), f"{target}|{n}")
    return None if score is None else int(score)


def dead_letter(store: Store, n: str, target: str = "voicenter") -> dict[str, Any] | None:
    raw = store.redis.hget(store.key("dlq"), f"{target}|{n}")
    return None if raw is None else dict(json.loads(raw))
