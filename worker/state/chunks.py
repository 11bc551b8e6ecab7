"""Batches and chunks: staging, claiming leased chunks, opening, renewing, completing and
releasing them, retries due again, and what is staged or in flight per target."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from typing import Any

import redis

from worker.providers.base import Action
from worker.runtime import fastjson
from worker.state.codec import ms, text
from worker.state.keyspace import FirstSlot, Keyspace, Slot
from worker.state.records import (
    Chunk,
    Claimed,
    CompleteOptions,
    Completion,
    ItemResult,
    OpenChunk,
    Released,
    Tally,
)


class Chunks(Keyspace):
    """`stage:*`, `inflight:*`, `chunk:*`, `leases`, `opened` and `retry`, and what a
    completion records per target (`confirmed:*`, `fails:*`, ...: lua/complete.lua)."""

    def claim(self, target: str, provider: str, action: Action, **options: Any) -> Claimed:
        """Lease staged numbers as chunks (see lua/claim.lua); the options are
        `claim_args`'s."""
        return Claimed.decode(
            self._run("claim", *self.claim_args(target, provider, action, **options))
        )

    @staticmethod
    def claim_args(
        target: str,
        provider: str,
        action: Action,
        *,
        size: int,
        lease_seconds: float,
        mode: str,
        linger_ms: int,
        max_chunks: int,
        max_in_flight: int = 0,
        open_first: bool = False,
        first_slot: FirstSlot | None = None,
    ) -> tuple[Any, ...]:
        """claim.lua's arguments. `max_in_flight`: claim none while the target has that many
        chunks' worth of numbers in flight (0: no cap); `open_first`: open the first chunk
        claimed too (`Claimed.opened`, as `open_chunk`, `first_slot` with it)."""
        return (target, provider, action.value, size, ms(lease_seconds), mode, linger_ms,
                max_chunks, max_in_flight, "1" if open_first else "0",
                first_slot.encode() if first_slot else "")  # fmt: skip

    def open_chunk(
        self, chunk_id: str, lease_seconds: float, first_slot: FirstSlot | None = None
    ) -> OpenChunk | None:
        """A chunk about to be pushed, whether its provider is stopped, and its numbers'
        ledger states; its lease starts again now. None when the chunk is gone (completed
        or recovered). With `first_slot`, its first request's slot is taken too, when its
        provider has terms there, is not stopped and has one free (`OpenChunk.slot`)."""
        slot = first_slot.encode() if first_slot else ""
        sent = time.monotonic()
        return _sent_at(
            OpenChunk.decode(self._run("open", chunk_id, ms(lease_seconds), slot)), sent
        )

    def renew(self, chunk_id: str, lease_seconds: float) -> bool:
        return bool(self._run("renew", chunk_id, ms(lease_seconds)))

    def complete(
        self,
        chunk: Chunk,
        results: dict[str, ItemResult],
        options: CompleteOptions,
        give_back: Sequence[Slot] = (),
    ) -> Completion:
        """Record a chunk's per-number results (see lua/complete.lua); `give_back`: the
        request slots its push is done with, given back first in the same round trip."""
        args = self._complete_args(chunk, results, options)
        return Completion.decode(self._run_giving_back(give_back, "complete", *args))

    def complete_then_claim(
        self,
        chunk: Chunk,
        results: dict[str, ItemResult],
        options: CompleteOptions,
        give_back: Sequence[Slot] = (),
        **claim: Any,
    ) -> tuple[Completion, Claimed]:
        """`complete`, then `claim` (its keyword arguments) right after it, in one round
        trip: a push chain's next chunk. The claim runs after the completion, as two calls
        would: the chunk completed no longer counts against the target's in-flight cap.
        When the completion fails, the chunks the claim took are given back to staging
        (and the slot its opening took) before its error is raised: the chain that would
        push them ends with it."""
        sent = time.monotonic()
        done, claimed = self._run_in_order(
            [("complete", self._complete_args(chunk, results, options)),
             ("claim", self.claim_args(chunk.target, chunk.provider, chunk.action, **claim))],
            give_back,
        )  # fmt: skip
        if isinstance(done, Exception):
            if not isinstance(claimed, Exception):
                took = Claimed.decode(claimed)
                if took.opened is not None and took.opened.slot:
                    with contextlib.suppress(redis.RedisError):  # else its lease runs out
                        self.give_back_slots([(chunk.provider, took.opened.slot)])
                for chunk_id in took.chunks:
                    self.release(chunk_id, recover=False, late_ms=0)  # never sent
            raise done
        if isinstance(claimed, Exception):
            raise claimed
        took = Claimed.decode(claimed)
        return Completion.decode(done), replace(took, opened=_sent_at(took.opened, sent))

    def _complete_args(
        self, chunk: Chunk, results: dict[str, ItemResult], options: CompleteOptions
    ) -> tuple[Any, ...]:
        opts = {**asdict(options), "audit_cap": self.audit_cap}
        encoded = fastjson.dumps({n: r.encode() for n, r in results.items()})
        return (chunk.raw, encoded, json.dumps(opts))

    def release(self, chunk_id: str, *, recover: bool, late_ms: int) -> Released:
        """Give a chunk's numbers back to staging: handed back unsent by its pusher, or
        recovered once its lease has run out ('alive' if it was renewed meanwhile); a late
        request of its pusher may land for `late_ms` (see lua/release.lua)."""
        mode = "recover" if recover else "return"
        return Released.decode(self._run("release", chunk_id, mode, late_ms))

    def leased(self) -> int:
        """How many chunks are leased: being pushed now (or lost, until recovered)."""
        return int(self.redis.zcard(self.key("leases")))

    def expired_leases(self, limit: int = 100) -> list[str]:
        ids = self.redis.zrangebyscore(self.key("leases"), "-inf", self.now_ms(), 0, limit)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def sweep_retries(self, limit: int = 1000) -> Tally:
        """Move due retries into their batches (the count: how many); drop the work of targets
        that are not live (see sweep.lua)."""
        return Tally.decode(self._run("sweep", limit))

    def staged_batches(self, targets: Iterable[str]) -> list[tuple[str, Action, int, int]]:
        """(target, action, size, oldest staged ms) of every non-empty batch."""
        pairs = [(t, a) for t in targets for a in Action]
        pipe = self.redis.pipeline(transaction=False)
        for target, action in pairs:
            key = self.key("stage", target, action.value)
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
        answers = pipe.execute()
        out = []
        for i, (target, action) in enumerate(pairs):
            size, oldest = answers[2 * i], answers[2 * i + 1]
            if size:
                out.append((target, action, int(size), int(oldest[0][1]) if oldest else 0))
        return out

    def counts(self, targets: list[str]) -> dict[str, dict[str, int]]:
        """Per target: staged adds/removes, in flight; plus retrying and dead-lettered totals."""
        pipe = self.redis.pipeline(transaction=False)
        for target in targets:
            pipe.zcard(self.key("stage", target, "add"))
            pipe.zcard(self.key("stage", target, "remove"))
            pipe.hlen(self.key("inflight", target))
        answers = pipe.execute()
        out = {}
        for i, target in enumerate(targets):
            out[target] = {
                "staged_add": int(answers[3 * i]),
                "staged_remove": int(answers[3 * i + 1]),
                "in_flight": int(answers[3 * i + 2]),
            }
        return out

    def retry_counts(self) -> dict[str, int]:
        """Numbers waiting for a retry, per target."""
        out: dict[str, int] = {}
        for member in self.redis.zscan_iter(self.key("retry"), count=1000):
            target = text(member[0]).split("|", 1)[0]
            out[target] = out.get(target, 0) + 1
        return out


def _sent_at(opened: OpenChunk | None, sent: float) -> OpenChunk | None:
    """`opened` with when the round trip that took its first request's slot was sent."""
    return replace(opened, slot_at=sent) if opened is not None and opened.slot else opened
