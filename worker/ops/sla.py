"""The compliance SLA: numbers whose latest state is not yet confirmed everywhere in time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from worker.pipeline.context import Context


@dataclass
class Overdue:
    phone: str
    state: str
    age_seconds: float
    pending: list[str] = field(default_factory=list)  # targets still without it


def overdue(ctx: Context, age_seconds: float, limit: int = 10_000) -> list[Overdue]:
    """Numbers staged, in flight, retrying or dead-lettered somewhere whose ledger state is
    older than `age_seconds` (a key-press opt-out must be honoured within 10 business days;
    the default alarm is 24 hours)."""
    store = ctx.store
    now = store.now_ms()
    cutoff = now - int(age_seconds * 1000)
    pending: dict[str, set[str]] = {}
    for target in ctx.known_targets():
        for action in ("add", "remove"):
            key = store.key("stage", target, action)
            for n in cast(list[Any], store.redis.zrangebyscore(key, "-inf", cutoff)):
                pending.setdefault(_text(n), set()).add(target)
        for n in cast(list[Any], store.redis.hkeys(store.key("inflight", target))):
            pending.setdefault(_text(n), set()).add(target)
    for member, _ in store.redis.zscan_iter(store.key("retry"), count=1000):
        target, _, n = _text(member).partition("|")
        pending.setdefault(n, set()).add(target)
    for member, _ in store.redis.zscan_iter(store.key("dlq:age"), count=1000):
        target, _, n = _text(member).partition("|")
        pending.setdefault(n, set()).add(target)
    out = []
    numbers = sorted(pending)
    for start in range(0, len(numbers), 1000):
        page = numbers[start : start + 1000]
        rows = store.redis.pipeline(transaction=False)
        for n in page:
            rows.hmget(store.key("num", n), "s", "u")
        for n, (state, updated) in zip(page, rows.execute(), strict=True):
            if updated is None or int(updated) > cutoff:
                continue
            out.append(Overdue(n, _text(state or b""), (now - int(updated)) / 1000,
                               sorted(pending[n])))  # fmt: skip
            if len(out) >= limit:
                return out
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
