"""The typed records the store's scripts answer with and are given, each field named as the
script names it (a script answers a JSON object whose keys are the record's fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.providers.base import Action
from worker.state.codec import as_list, as_object, lua_json


@dataclass(frozen=True, slots=True)
class Staged:
    """A batch an operation touched: its size now and before the operation, and the
    numbers in flight to its target (prelude.lua: staged_summary)."""

    target: str
    action: Action
    count: int
    before: int
    in_flight: int = 0

    @property
    def opened(self) -> bool:
        """This operation started the batch (and so its linger)."""
        return self.before == 0

    def filled(self, size: int) -> bool:
        """This operation completed a chunk: one full-flush per chunk, not one per event."""
        return self.count // size > self.before // size

    @classmethod
    def batches(cls, raw: Any) -> list[Staged]:
        """The `staged` list of a script's answer."""
        return [
            cls(
                str(b["target"]),
                Action(str(b["action"])),
                int(b["count"]),
                int(b["before"]),
                int(b["in_flight"]),
            )
            for b in as_list(raw)
        ]


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    """What the accept script did with one event."""

    status: str  # ok | duplicate | conflict
    event_id: str
    results: list[str] = field(default_factory=list)  # per number: applied, stale, ...
    staged: list[Staged] = field(default_factory=list)

    @classmethod
    def decode(cls, raw_answer: Any) -> AcceptOutcome:
        raw = lua_json(raw_answer)
        return cls(
            status=str(raw["status"]),
            event_id=str(raw["event_id"]),
            results=[str(r) for r in as_list(raw.get("results"))],
            staged=Staged.batches(raw.get("staged")),
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """What claim.lua leased: 'ok', or why nothing ('inactive', 'paused', 'held',
    'probing'); the chunks' ids; the batches it re-staged numbers into; the first chunk
    opened, when the claim was asked to open it (None otherwise, or when none was claimed)."""

    status: str
    chunks: list[str]
    staged: list[Staged] = field(default_factory=list)
    opened: OpenChunk | None = None

    @classmethod
    def decode(cls, raw_answer: Any) -> Claimed:
        raw = lua_json(raw_answer)
        opened = raw.get("opened")
        return cls(
            str(raw["status"]),
            [str(c) for c in as_list(raw.get("chunks"))],
            Staged.batches(raw.get("staged")),
            OpenChunk.from_answer(opened) if opened else None,
        )


@dataclass(frozen=True, slots=True)
class ChunkItem:
    """One number of a leased chunk, with the ledger version it pushes.

    `chunk:{id}` keeps each item as a list of these fields in this order (a chunk written by
    one version is read by the next during an upgrade); prelude.lua's ITEM names the same
    positions."""

    e164: str
    version: str
    name: str
    expires_ms: int
    context: str = ""
    source: str = ""
    reason: str = ""
    updated_ms: int = 0  # when the ledger took this state: propagation time starts there


@dataclass(frozen=True, slots=True)
class Chunk:
    """A leased batch of numbers for one target and action."""

    id: str
    target: str
    provider: str
    action: Action
    items: list[ChunkItem]
    raw: str

    @classmethod
    def parse(cls, raw: str) -> Chunk:
        data = lua_json(raw)
        return cls(
            id=str(data["id"]),
            target=str(data["target"]),
            provider=str(data["provider"]),
            action=Action(data["action"]),
            items=[
                ChunkItem(str(n), str(v), str(nm), int(x), str(c), str(src), str(r), int(u))
                for n, v, nm, x, c, src, r, u in data["items"]
            ],
            raw=raw,
        )


@dataclass(frozen=True)
class OpenChunk:
    """A chunk as a push opens it: is its provider stopped (paused, or held by a Retry-After
    or an open circuit), and per number the state its target should hold now (the ledger's;
    'unblocked' for a block routed elsewhere only; 'held' when an add-only target holds it
    already; '' when the ledger does not hold it) and the ledger's version ('' likewise)."""

    chunk: Chunk
    stopped: bool
    states: dict[str, str]
    versions: dict[str, str]
    slot: str = ""  # the token of its first request's slot, taken as it was opened
    # When the round trip that took it was sent (monotonic; set by worker/state/chunks.py):
    # the slot was taken after it.
    slot_at: float = field(default=0.0, compare=False)

    @classmethod
    def decode(cls, raw_answer: Any) -> OpenChunk | None:
        """None when open.lua found no chunk (completed or recovered)."""
        return cls.from_answer(lua_json(raw_answer))

    @classmethod
    def from_answer(cls, answer: Any) -> OpenChunk | None:
        """From open.lua's answer, decoded (claim.lua's `opened` too)."""
        raw = as_object(answer)
        if not raw.get("chunk"):
            return None
        return cls(
            Chunk.parse(str(raw["chunk"])),
            bool(raw["stopped"]),
            as_object(raw.get("states")),  # (strings as cjson wrote them: no copies)
            as_object(raw.get("versions")),
            str(raw.get("slot") or ""),
        )


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What complete.lua is told of one number of the chunk: its outcome (done, retry,
    outage, permanent; stale or unsent: not sent), why, the provider's Retry-After and
    retry window, a jitter in [0, 1) for its backoff, and whether a request that failed may
    still be carried out later."""

    outcome: str
    reason: str
    detail: str = ""
    retry_after_ms: int = 0
    jitter: float = 0.0
    window_ms: int = 0
    may_land: bool = False

    def encode(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "detail": self.detail,
            "retry_after_ms": self.retry_after_ms,
            "jitter": self.jitter,
            "window_ms": self.window_ms,
            "may_land": self.may_land,
        }


@dataclass(frozen=True, slots=True)
class CompleteOptions:
    """How complete.lua treats failures (names as the script reads them)."""

    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int
    outage_budget_ms: int  # a number failing by outages this long is dead-lettered
    breaker_threshold: int  # chunks in a row whose requests all failed: the circuit opens
    breaker_cap_ms: int  # the longest the open circuit holds the provider
    moved_retry_ms: int  # a target a number was taken from is pushed again after this
    late_ms: int  # how long a request may land after its push lost the chunk (release)
    hold_ms: int = 0  # a Retry-After the chunk's answers asked for


@dataclass(frozen=True, slots=True)
class Completion:
    """What complete.lua did: 'ok' or 'orphan' (the chunk was recovered meanwhile), counts
    per outcome, the batches it touched, the provider's circuit after it, and the server's
    time it ran at (0 from a script that did not say)."""

    status: str
    counts: dict[str, int]
    staged: list[Staged]
    circuit: str = "closed"  # closed | failing | open
    now_ms: int = 0

    @classmethod
    def decode(cls, raw_answer: Any) -> Completion:
        raw = lua_json(raw_answer)
        return cls(
            str(raw["status"]),
            {str(k): int(v) for k, v in as_object(raw.get("counts")).items()},
            Staged.batches(raw.get("staged")),
            str(raw.get("circuit") or "closed"),
            int(raw.get("now") or 0),
        )


@dataclass(frozen=True, slots=True)
class Released:
    """What release.lua did with a chunk: 'ok' (its numbers staged again), 'gone' (completed
    or released already) or 'alive' (renewed since its lease was seen to run out)."""

    status: str
    staged: list[Staged]

    @classmethod
    def decode(cls, raw_answer: Any) -> Released:
        raw = lua_json(raw_answer)
        return cls(str(raw["status"]), Staged.batches(raw.get("staged")))


@dataclass(frozen=True, slots=True)
class Tally:
    """A script's count and the batches it staged: the due retries sweep.lua moved, the
    numbers expire.lua unblocked, the dead letters replay.lua replayed, the numbers a
    catch-up step (stage_many.lua) staged."""

    count: int
    staged: list[Staged]

    @classmethod
    def decode(cls, raw_answer: Any) -> Tally:
        raw = lua_json(raw_answer)
        return cls(int(raw["count"]), Staged.batches(raw.get("staged")))


@dataclass(frozen=True, slots=True)
class Repaired:
    """reconcile.lua: how many numbers it staged, how many it kept because the ledger
    blocks them now, and the batches."""

    numbers: int
    kept: int
    staged: list[Staged]

    @classmethod
    def decode(cls, raw_answer: Any) -> Repaired:
        raw = lua_json(raw_answer)
        return cls(int(raw["numbers"]), int(raw["kept"]), Staged.batches(raw.get("staged")))


@dataclass(frozen=True, slots=True)
class LiveTarget:
    """A target an announcement made live, and whether it is caught up from the ledger."""

    target: str
    catch_up: bool


@dataclass(frozen=True, slots=True)
class Registered:
    """register.lua: the targets that became live, and whether the announced routes changed
    ('changed'), were announced for the first time ('new'), or neither (None)."""

    live: list[LiveTarget]
    routes: str | None

    @classmethod
    def decode(cls, raw_answer: Any) -> Registered:
        raw = lua_json(raw_answer)
        live = [LiveTarget(str(t["target"]), bool(t["catch_up"])) for t in as_list(raw["live"])]
        return cls(live, str(raw["routes"]) if raw["routes"] else None)
