"""Per-number state: accepting events into the ledger, lifting expired blocks, and reading a
number's ledger, audit trail, blocks and where it stands at each target."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from worker.runtime import fastjson
from worker.state.codec import decode, ledger_blocks, text
from worker.state.keyspace import Keyspace
from worker.state.records import AcceptOutcome, Tally
from worker.state.replication import Replication


def accept_args(
    event: dict[str, Any],
    numbers: list[tuple[str, str]],
    route: dict[str, Any],
    idempotency_ttl_seconds: int,
    audit_cap: int,
    idempotency_mode: str,
    force: bool = False,
) -> list[Any]:
    """accept.lua's arguments after the prefix and the time."""
    return [
        fastjson.dumps(event),
        idempotency_ttl_seconds,
        audit_cap,
        fastjson.dumps(route),
        fastjson.dumps(numbers),
        idempotency_mode,
        "1" if force else "0",
    ]


#: The sets the blocked numbers are split into (lua/prelude.lua: BLOCKED_BUCKETS).
BLOCKED_BUCKETS = 32768


def blocked_bucket(e164: str) -> int:
    """The bucket of the blocked index a number is in (lua/prelude.lua: blocked_bucket)."""
    return int(e164[-6:]) % BLOCKED_BUCKETS


def _set_bits(bitmap: bytes, start: int) -> list[int]:
    """The positions of the bits set in a Redis bitmap (most significant bit first), from
    `start` on."""
    out: list[int] = []
    for i in range(start // 8, len(bitmap)):
        byte = bitmap[i]
        if byte:
            out.extend(i * 8 + j for j in range(8) if byte & (0x80 >> j) and i * 8 + j >= start)
    return out


class Ledger(Keyspace):
    """The ledger (`num:{e164}`, with each target's confirmation: `targets:codes`), its
    audit trail, the `blocked` set and the `expiry` index."""

    def accept(
        self,
        event: dict[str, Any],
        numbers: list[tuple[str, str]],
        route: dict[str, Any],
        idempotency_ttl_seconds: int,
        idempotency_mode: str = "once",
        *,
        force: bool = False,
        replication: Replication | None = None,
    ) -> AcceptOutcome:
        """Write one event (see lua/accept.lua); `route` picks the live targets it goes to.
        With `replication`, WAIT follows the script on the same connection (a pipeline): on
        any other it would return at once, having written nothing to wait for."""
        args = self.argv(
            *accept_args(
                event, numbers, route, idempotency_ttl_seconds, self.audit_cap,
                idempotency_mode, force,
            )
        )  # fmt: skip
        return AcceptOutcome.decode(self._run_replicated("accept", args, replication))

    def expire_due(self, limit: int = 1000) -> Tally:
        """Lift temporary blocks whose expiry has passed; the count: numbers unblocked."""
        return Tally.decode(self._run("expire", limit, self.audit_cap))

    def expiry_due_count(self) -> int:
        """Temporary blocks whose end has passed and that the sweep has yet to lift (it
        lifts up to 1,000 a tick)."""
        return int(self.redis.zcount(self.key("expiry"), "-inf", self.now_ms()))

    def adopt_step(self, count: int = 200) -> bool:
        """One page of the pass that adopts blocks written before blocks kept their source
        (lua/adopt.lua), from where the last step left it; False once it has ended. Pages
        as small as accept's writes (WRITE_CHUNK): a long script stalls every other call."""
        cursor = self.redis.get(self.key("adopted"))
        if cursor == b"done":
            return False
        position, numbers = self.blocked_page(text(cursor or b"0"), count)
        if numbers:
            self._run("adopt", json.dumps(numbers))
        self.redis.set(self.key("adopted"), "done" if position == "0" else position)
        return True

    def ledger(self, e164: str) -> dict[str, str]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("num", e164)))
        return {text(k): text(v) for k, v in raw.items()}

    def blocked_among(self, numbers: list[str]) -> set[str]:
        """Which of these numbers the ledger blocks now (its own word, not the index's: an
        older process of a rolling upgrade keeps only the old index)."""
        if not numbers:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hget(self.key("num", n), "s")
        return {n for n, s in zip(numbers, pipe.execute(), strict=True) if s == b"blocked"}

    def blocked_until(self, numbers: list[str], until_ms: int, source: str) -> set[str]:
        """Which of these numbers a block of `source`'s own holds at least until `until_ms`
        (0: for good); another source's block may be routed to other providers
        (prelude.lua, target_state)."""
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hmget(self.key("num", n), "s", "bl", "rs", "src", "t")
        out = set()
        for n, (state, bl, rs, src, t) in zip(numbers, pipe.execute(), strict=True):
            if state != b"blocked":
                continue
            # A block written before blocks kept their source stands for each source the
            # ledger named behind it (prelude.lua: adopt_legacy).
            known = text(rs or src or b"").split("\n")
            ends = [
                int(b[1]) for b in ledger_blocks(bl, t, rs)
                if (b[2] == source if len(b) > 2 else source in known)
            ]  # fmt: skip
            if any(held == 0 or (until_ms != 0 and held >= until_ms) for held in ends):
                out.add(n)
        return out

    def blocked_page(self, cursor: str, count: int) -> tuple[str, list[str]]:
        """About `count` of the numbers the ledger blocks, from `cursor` ("0": the start; "0"
        back: the end). The index is BLOCKED_BUCKETS sets (lua/prelude.lua: block_number),
        read a bucket at a time (`k{bucket}`), after the one set a deployment from before
        kept them in while it is not yet moved (an SSCAN cursor: plain digits, as cursors
        stored before read). Nothing moved out of the old set during its scan is missed:
        the buckets are read after it."""
        if cursor == "0" and not self.redis.exists(self.key("blocked")):
            cursor = "k0"
        if not cursor.startswith("k"):
            raw, members = self.redis.sscan(self.key("blocked"), int(cursor), count=count)
            return ("k0" if int(raw) == 0 else str(raw)), [text(m) for m in members]
        start, numbers = int(cursor[1:]), list[str]()
        used = _set_bits(cast(bytes, self.redis.get(self.key("blocked:used")) or b""), start)
        taken = 0
        # Buckets a round trip at a time, more of them while they turn out sparse: a few
        # for a page at hundreds of numbers a bucket, hundreds at a few.
        step = max(1, min(512, count // 256))
        while taken < len(used) and len(numbers) < count:
            pipe = self.redis.pipeline(transaction=False)
            for b in used[taken : taken + step]:
                pipe.smembers(self.key("blocked", str(b)))
            found = 0
            for members in pipe.execute():
                numbers.extend("+" + text(m) for m in members)
                found += len(members)
            taken += step
            if found * 4 < count:
                step = min(step * 4, 4096)
        if taken >= len(used):
            return "0", numbers
        return f"k{used[taken]}", numbers

    def blocked_total(self) -> int:
        """How many numbers the blocked index holds (`blocked:count`, kept by the scripts,
        and what the one set of a deployment from before still holds): what a scan of it
        goes through."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key("blocked:count"))
        pipe.scard(self.key("blocked"))
        count, legacy = pipe.execute()
        return int(count or 0) + int(legacy)

    def blocked_pages(self, count: int) -> Iterator[list[tuple[str, str, str]]]:
        """(number, expiry ms, updated ms) of every blocked number, a page at a time."""
        cursor = "0"
        while True:
            cursor, numbers = self.blocked_page(cursor, count)
            if numbers:
                pipe = self.redis.pipeline(transaction=False)
                for n in numbers:
                    pipe.hmget(self.key("num", n), "s", "x", "u")
                rows = []
                for n, (state, x, u) in zip(numbers, pipe.execute(), strict=True):
                    if state != b"blocked":
                        continue  # (the index of an older process of a rolling upgrade)
                    expires = text(x) if x and text(x) != "0" else ""
                    rows.append((n, expires, text(u) if u else ""))
                yield rows
            if cursor == "0":
                return

    def ledger_sources(self, numbers: list[str]) -> list[list[str]]:
        """Per number, the sources of the adds behind its block (`rs`; a ledger written
        before it was kept: the source of its last change)."""
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hmget(self.key("num", n), "rs", "src")
        out = []
        for sources, last in pipe.execute():
            if sources:
                out.append(text(sources).split("\n"))
            else:
                out.append([text(last)] if last else [""])
        return out

    def confirmation_field(self, target: str) -> str | None:
        """The ledger hash field a target's confirmations are kept in (lua/prelude.lua:
        conf_field); None while the target has none."""
        code = self.redis.hget(self.key("targets:codes"), target)
        return None if code is None else f"k{text(code)}"

    def confirmations(self, target: str, numbers: list[str]) -> list[str | None]:
        """What the target is confirmed to hold for each number (`{state}:{version}`, `?`
        for unknown), or None: lua/prelude.lua's `confirmed`, read from outside."""
        field = self.confirmation_field(target)
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hget(self.key("confirmed", target), n)  # kept the old way: the newer word
            pipe.hget(self.key("num", n), field or "k")
        raw = pipe.execute()
        out: list[str | None] = []
        for old, new in zip(raw[::2], raw[1::2], strict=True):
            if old is not None:
                out.append(text(old))
            elif new is not None and field is not None:
                out.append(_unpacked(text(new)))
            else:
                out.append(None)
        return out

    def confirmation(self, target: str, e164: str) -> str | None:
        return self.confirmations(target, [e164])[0]

    def confirmed_page(self, target: str, cursor: str, count: int) -> tuple[str, list[str]]:
        """A page of the ledger (SCAN over `num:*`) and of it the numbers the target has a
        confirmation for: the keyspace cursor moves on whatever the page holds."""
        next_cursor, keys = self.redis.scan(
            int(cursor), match=self.key("num", "*"), count=count, _type="hash"
        )
        skip = len(self.key("num", ""))
        numbers = [text(k)[skip:] for k in keys]
        held = self.confirmations(target, numbers)
        return str(next_cursor), [n for n, c in zip(numbers, held, strict=True) if c]

    def move_confirmations(self, count: int = 200) -> int:
        """One step of moving confirmations kept the old way (`confirmed:{target}`) into
        the ledger (lua/move.lua); 0 once none is left."""
        return int(self._run("move", count))

    def provider_view(self, e164: str, targets: list[str]) -> dict[str, dict[str, Any]]:
        """Where one number stands at each target: confirmed, staged, in flight, retrying,
        dead-lettered, and the provider's last answer."""
        confirmed = {t: self.confirmation(t, e164) for t in targets}
        pipe = self.redis.pipeline(transaction=False)
        for target in targets:
            member = f"{target}|{e164}"
            pipe.zscore(self.key("stage", target, "add"), e164)
            pipe.zscore(self.key("stage", target, "remove"), e164)
            pipe.hget(self.key("inflight", target), e164)
            pipe.zscore(self.key("retry"), member)
            pipe.hget(self.key("fails", target), e164)
            pipe.hget(self.key("dlq"), member)
            pipe.hget(self.key("answer", target), e164)
        answers = pipe.execute()
        view: dict[str, dict[str, Any]] = {}
        for i, target in enumerate(targets):
            s_add, s_rem, infl, retry, att, dead, answer = answers[7 * i : 7 * i + 7]
            conf = confirmed[target]
            staged = "add" if s_add is not None else "remove" if s_rem is not None else None
            view[target] = {
                "confirmed": conf,
                "staged": staged,
                "in_flight_chunk": text(infl) if infl else None,
                "retry_at_ms": int(retry) if retry is not None else None,
                "attempts": _attempts(att),
                "dead_letter": decode(dead) if dead else None,
                "last_answer": decode(answer) if answer else None,
            }
        return view


def _unpacked(conf: str) -> str:
    """A confirmation as the ledger keeps it (lua/prelude.lua: pack_conf) in full."""
    state = {"b": "blocked", "u": "unblocked"}.get(conf[:1])
    return f"{state}:{conf[1:]}" if state else conf


def _attempts(raw: Any) -> int:
    """The count of a ``fails:{target}`` entry (``{version}:{count}``)."""
    return int(text(raw).rsplit(":", 1)[-1]) if raw else 0
