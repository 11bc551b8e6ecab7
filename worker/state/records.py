"""The typed records the store's scripts answer with and are given: batches touched, chunks,
completions, accept outcomes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from worker.providers.base import Action
from worker.state.codec import as_list, decode


@dataclass(frozen=True, slots=True)
class Staged:
    """A batch an operation touched: its size now and before the operation, and the
    numbers in flight to its target."""

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


def decode_staged(raw: Any) -> list[Staged]:
    return [
        Staged(str(t), Action(str(a)), int(c), int(b), int(f)) for t, a, c, b, f in as_list(raw)
    ]


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    """What the accept script did with one event."""

    status: str  # ok | duplicate | conflict
    event_id: str
    results: list[str] = field(default_factory=list)  # per number: applied, stale, ...
    staged: list[Staged] = field(default_factory=list)


def decode_accept(answer: Any) -> AcceptOutcome:
    raw = decode(answer)
    return AcceptOutcome(
        status=raw["status"],
        event_id=raw["event_id"],
        results=[str(r) for r in as_list(raw.get("results"))],
        staged=decode_staged(raw.get("staged")),
    )


@dataclass(frozen=True, slots=True)
class ChunkItem:
    """One number of a leased chunk, with the ledger version it pushes."""

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
        data = json.loads(raw)
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
    per outcome, the batches it touched, and the provider's circuit after it."""

    status: str
    counts: dict[str, int]
    staged: list[Staged]
    circuit: str = "closed"  # closed | failing | open


@dataclass(frozen=True)
class OpenChunk:
    """A chunk as a push opens it: is its provider stopped (paused, or held by a Retry-After
    or an open circuit), and each number's (state, version) in the ledger now ("", "" for
    one the ledger does not hold)."""

    chunk: Chunk
    stopped: bool
    states: dict[str, tuple[str, str]]
