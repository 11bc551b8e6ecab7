"""Targets: announcing them with their capabilities and the routes, the live directory, and
catching a target up from the ledger (backfill) or repairing what a reconciliation found."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from worker.state.codec import decode, ms, text
from worker.state.keyspace import Keyspace
from worker.state.ledger import BLOCKED_BUCKETS
from worker.state.records import Registered, Repaired, Tally


@dataclass(frozen=True, slots=True)
class Announced:
    """A target some process has announced: its provider, and whether it is live (announced
    within its TTL: accepts stage for it, the workers push to it)."""

    provider: str
    live: bool


def scan_fraction(cursor: int) -> float:
    """How much of the keyspace a SCAN (or a set's SSCAN) has covered at `cursor`: Redis
    walks its table's buckets in reverse-binary order, so the cursor's bits read backwards
    are the share behind it, whatever the table's size (more bits only add precision)."""
    return int(f"{cursor:064b}"[::-1], 2) / 2**64


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Where a target's catch-up stands, its `backfill` cursor read (store.py: the key
    scheme): `phase` "b", the blocked index (`position` "0", then `k{bucket}`; plain
    digits, an SSCAN cursor of the one set of before), then "k", the ledger's numbers (a
    SCAN cursor; "c", the release before's HSCAN cursor, starts that pass over);
    `generation` is ``@{n}``, this catch-up's own, carried to the end, with ``!`` when the
    target was never confirmed anything: then the blocked numbers are the whole of it."""

    phase: str
    position: str
    generation: str

    @classmethod
    def read(cls, cursor: str) -> CatchUp:
        where, at, generation = cursor.partition("@")
        phase, _, position = where.rpartition(":")
        if phase == "c":
            # Taken for a SCAN cursor of the keyspace it would go on from an arbitrary
            # bucket, past numbers the target holds that the ledger lifted: start over.
            phase, position = "k", "0"
        return cls("k" if phase == "k" else "b", position, at + generation)

    @property
    def blocked_only(self) -> bool:
        """No pass over the ledger after the blocked numbers (register.lua: a target never
        confirmed anything holds nothing of ours whose state could have moved)."""
        return self.generation.endswith("!")

    @property
    def stage(self) -> str:
        """The pass, as an operator reads it: `blocked` (every blocked number), then
        `ledger` (what the target was confirmed to hold, checked again)."""
        return "ledger" if self.phase == "k" else "blocked"

    def fraction(self) -> float | None:
        """How far through its pass, 0 to 1, read from the cursor (numbers spread evenly
        over the index's buckets and the keyspace's table); None while it reads the one
        set of before, which comes ahead of the buckets."""
        if self.position == "0":
            return 0.0
        if self.phase == "k":
            return scan_fraction(int(self.position))
        if self.position.startswith("k"):
            return int(self.position[1:]) / BLOCKED_BUCKETS
        return None


class Targets(Keyspace):
    """`targets`, `targets:live`, `routes`, `backfill` and `backfill:seq`."""

    def register_targets(
        self,
        metas: dict[str, dict[str, Any]],
        ttl_seconds: float,
        routes: dict[str, dict[str, list[str]]] | None = None,
    ) -> Registered:
        """Announce targets with their capabilities, live for `ttl_seconds`, and the routes
        (OPTOUT_ROUTES; None: left as they are); answer the targets that became live, each
        with whether it is caught up from the ledger (not when the ledger holds nothing it
        could need), and whether the announced routes changed (every live target is caught
        up then): 'changed', 'new' (none were announced before) or None."""
        # Canonical: processes with the same routes announce the same text (register.lua
        # starts a catch-up of every live target when the text changes).
        given = (
            ""
            if routes is None
            else json.dumps(
                {src: {k: sorted(v) for k, v in sorted(r.items())} for src, r in routes.items()},
                sort_keys=True,
            )
        )
        return Registered.decode(self._run("register", json.dumps(metas), ms(ttl_seconds), given))

    def announced_routes(self) -> dict[str, dict[str, list[str]]] | None:
        """The deployment's routes as the last announcement left them (register.lua), what
        target_state decides by; None when no process has announced any."""
        raw = self.redis.get(self.key("routes"))
        return None if raw is None else cast(dict[str, dict[str, list[str]]], decode(raw))

    def known_targets(self) -> list[str]:
        """Every target any process has announced, live or not."""
        return sorted(text(t) for t in cast(list[Any], self.redis.hkeys(self.key("targets"))))

    def announced(self) -> dict[str, Announced]:
        """Every target any process has announced, live or not -> its provider and whether
        it is live: the deployment as the workers registered it, whatever this process's
        own settings."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.key("targets:live"), self.now_ms(), "+inf")
        pipe.hgetall(self.key("targets"))
        live, metas = pipe.execute()
        alive = {text(t) for t in live}
        out: dict[str, Announced] = {}
        for raw, meta in cast(dict[Any, Any], metas).items():
            target = text(raw)
            provider = decode(meta).get("provider") if meta else None
            out[target] = Announced(str(provider or target.split(":")[0]), target in alive)
        return out

    def directory(self) -> dict[str, dict[str, Any]]:
        """The live targets (announced within their TTL) -> their capabilities."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.key("targets:live"), self.now_ms(), "+inf")
        pipe.hgetall(self.key("targets"))
        live, metas = pipe.execute()
        known = {text(k): v for k, v in cast(dict[Any, Any], metas).items()}
        out: dict[str, dict[str, Any]] = {}
        for raw in live:
            target = text(raw)
            meta = known.get(target)
            out[target] = dict(decode(meta)) if meta else {"provider": target.split(":")[0]}
        return out

    def backfills(self) -> dict[str, str]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("backfill")))
        return {text(k): text(v) for k, v in raw.items()}

    def catch_ups(self) -> dict[str, CatchUp]:
        """Every catch-up under way, where it stands."""
        return {target: CatchUp.read(cursor) for target, cursor in self.backfills().items()}

    def advance_backfill(self, target: str, read: str, cursor: str | None) -> bool:
        """Move a catch-up on from the cursor `read` to `cursor` (None: done), unless a
        fresh catch-up replaced it meanwhile (answers False then)."""
        return bool(self._run("cursor", target, read, cursor or ""))

    def stage_many(self, target: str, numbers: list[str]) -> Tally:
        """A catch-up step: stage what the ledger says for numbers the target lacks; the
        count: how many of them were staged."""
        return Tally.decode(self._run("stage_many", target, json.dumps(numbers)))

    def repair(self, target: str, numbers: list[str], mode: str, who: str) -> Repaired:
        """Stage what a reconciliation found (lua/reconcile.lua): 'missing' numbers pushed
        again, 'extra' ones removed unless the ledger blocks them now (those are kept)."""
        return Repaired.decode(
            self._run("reconcile", target, json.dumps(numbers), mode, who, self.audit_cap)
        )
