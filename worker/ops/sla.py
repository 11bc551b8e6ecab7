"""The compliance SLA: numbers whose latest state is not yet confirmed everywhere in time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from worker.ops.progress import Progress, silent
from worker.pipeline.context import Context
from worker.state.store import Store

#: Pending numbers read a round trip at a time (a page of a batch, of the retries...).
PAGE = 1000


@dataclass
class Overdue:
    phone: str
    state: str
    age_seconds: float
    pending: list[str] = field(default_factory=list)  # targets still without it


def overdue(
    ctx: Context, age_seconds: float, limit: int = 10_000, progress: Progress = silent
) -> list[Overdue]:
    """Numbers staged, in flight, retrying or dead-lettered somewhere whose ledger state is
    older than `age_seconds` (a key-press opt-out must be honoured within 10 business days;
    the default alarm is 24 hours), by number: the first `limit` found. The pending work is
    read a page at a time, dead letters and retries first, and the reading stops at `limit`
    numbers: a backlog of millions (a provider down for days, a catch-up of a per-number
    provider) is never held whole, nor read whole by each /metrics scrape."""
    store = ctx.store
    now = store.now_ms()
    cutoff = now - int(age_seconds * 1000)
    targets = ctx.known_targets()
    total = _pending_total(store, targets, cutoff)
    found: dict[str, Overdue] = {}
    read = 0
    complete = True
    for page in _pending(store, targets, cutoff):
        fresh = sorted({n for n, _ in page if n not in found})
        rows = store.redis.pipeline(transaction=False)
        for n in fresh:
            rows.hmget(store.key("num", n), "s", "u")
        late = {}
        for n, (state, updated) in zip(fresh, rows.execute(), strict=True):
            if updated is not None and int(updated) <= cutoff:
                late[n] = Overdue(n, _text(state or b""), (now - int(updated)) / 1000)
        for n, target in page:
            row = found.get(n) or late.get(n)
            if row is None:
                continue
            if n not in found:
                if len(found) >= limit:
                    continue
                found[n] = row
            if target not in row.pending:
                row.pending.append(target)
        read += len(page)
        progress("pending numbers", read, total)
        if len(found) >= limit:
            complete = False
            break
    if not complete:
        _pending_at(store, targets, cutoff, list(found.values()))
    for row in found.values():
        row.pending.sort()
    return sorted(found.values(), key=lambda r: r.phone)


def _pending_total(store: Store, targets: list[str], cutoff: int) -> int:
    """How many (number, target) pairs `_pending` goes through, read without reading them."""
    pipe = store.redis.pipeline(transaction=False)
    pipe.zcard(store.key("dlq:age"))
    pipe.zcard(store.key("retry"))
    for target in targets:
        pipe.hlen(store.key("inflight", target))
        for action in ("add", "remove"):
            pipe.zcount(store.key("stage", target, action), "-inf", cutoff)
    return sum(int(n) for n in pipe.execute())


def _pending(store: Store, targets: list[str], cutoff: int) -> Iterator[list[tuple[str, str]]]:
    """(number, target) of the work not done yet, a page at a time: dead letters, retries,
    chunks in flight, and what was staged before `cutoff`."""
    for key in (store.key("dlq:age"), store.key("retry")):
        for members in _zscan_pages(store, key):
            yield [_member(m) for m in members]
    for target in targets:
        cursor = 0
        while True:
            cursor, chunk = store.redis.hscan(store.key("inflight", target), cursor, count=PAGE)
            if chunk:
                yield [(_text(n), target) for n in chunk]
            if cursor == 0:
                break
        for action in ("add", "remove"):
            for members in _staged_before(store, store.key("stage", target, action), cutoff):
                yield [(_text(n), target) for n in members]


def _zscan_pages(store: Store, key: str) -> Iterator[list[Any]]:
    cursor = 0
    while True:
        cursor, pairs = store.redis.zscan(key, cursor, count=PAGE)
        if pairs:
            yield [member for member, _ in pairs]
        if cursor == 0:
            return


def _staged_before(store: Store, key: str, cutoff: int) -> Iterator[list[Any]]:
    """A batch's members staged before `cutoff`, oldest first, a page at a time: by score
    from the last page's, skipping the members already read at that score (a catch-up
    step stages thousands at one time), so a batch of millions staged since is not read."""
    low, at_low = "-inf", 0
    while True:
        pairs = cast(
            list[tuple[Any, float]],
            store.redis.zrangebyscore(key, low, cutoff, start=at_low, num=PAGE, withscores=True),
        )
        if not pairs:
            return
        yield [member for member, _ in pairs]
        last = pairs[-1][1]
        tied = sum(1 for _, score in pairs if score == last)
        at_low = at_low + tied if str(int(last)) == low else tied
        low = str(int(last))
        if len(pairs) < PAGE:
            return


def _pending_at(store: Store, targets: list[str], cutoff: int, rows: list[Overdue]) -> None:
    """Complete each row's targets when the reading stopped early: where its number is
    still pending, looked up one by one."""
    for start in range(0, len(rows), PAGE):
        chunk = rows[start : start + PAGE]
        pipe = store.redis.pipeline(transaction=False)
        for row in chunk:
            for target in targets:
                member = f"{target}|{row.phone}"
                pipe.zscore(store.key("dlq:age"), member)
                pipe.zscore(store.key("retry"), member)
                pipe.hexists(store.key("inflight", target), row.phone)
                pipe.zscore(store.key("stage", target, "add"), row.phone)
                pipe.zscore(store.key("stage", target, "remove"), row.phone)
        answers = iter(pipe.execute())
        for row in chunk:
            for target in targets:
                dead, retry, flying, add, remove = (next(answers) for _ in range(5))
                staged = any(s is not None and s <= cutoff for s in (add, remove))
                if (dead is not None or retry is not None or flying or staged) and (
                    target not in row.pending
                ):
                    row.pending.append(target)


def _member(raw: Any) -> tuple[str, str]:
    """(number, target) of a ``{target}|{e164}`` member (dead letters, retries)."""
    target, _, n = _text(raw).partition("|")
    return n, target


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
