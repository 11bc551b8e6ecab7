"""The lease of the chunk a push is working on, renewed before every provider request.

A push holds its chunk by a lease that `recover` gives back once it runs out (the worker is
presumed dead). Per-number providers send a whole chunk inside one `Provider.push` call, so
renewing between calls is not enough: every request renews first (`worker/providers/http.py`
calls `renew`), and a request whose lease is gone is never sent. The holder lives in a
context variable so that adapters need not carry it; `worker/providers/fanout.py` copies the
context into its threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from worker.state.keyspace import Slot

#: Renews the current chunk's lease; False when the chunk was recovered meanwhile.
Renew = Callable[[], bool]


#: How long after its chunk's opening a push's first request may still be sent on the slot
#: that opening took. The rate cap counts that request from the end of this time (counted
#: from when the slot was taken, one sent later would leave the last second's count early,
#: and the next requests, any worker's, could follow it closer than the cap allows), so it
#: is short: each such request holds its place in the rate cap this much longer. It bounds
#: too how long a Retry-After hold that lands after the opening goes unseen, and keeps the
#: request's exchange within the slot's lease (twice the HTTP timeout and more).
FIRST_SLOT_SECONDS = 0.1


class Slots:
    """The request slots a push's requests are done with (`worker/providers/ratelimit.py`),
    given back in the push's next round trip to Redis (its completion's, or the next part's
    of a bulk request it halved), not in one of their own: each such round trip waited
    behind every script queued in Redis (a sixth of a pushing process's time in a bulk).
    Meanwhile the slot still counts against the provider's cap: a few milliseconds more.
    Only a bulk provider's push keeps them (`worker/pipeline/push.py`)."""

    def __init__(self, first: Slot | None = None, taken_at: float = 0.0) -> None:
        self._done: list[Slot] = []
        self._lock = threading.Lock()
        self._first = first
        self._first_until = taken_at + FIRST_SLOT_SECONDS

    def first(self, provider: str) -> Slot | None:
        """The slot taken for the push's first request as its chunk was opened (`taken_at`,
        monotonic: when that round trip was sent, which renewed the lease and found the
        provider not held too), once. None when there is none, it is another provider's, or
        it was taken more than FIRST_SLOT_SECONDS ago: the request then asks for one as any
        other, renewing the lease, and this one is given back with the rest."""
        with self._lock:
            slot = self._first
            if slot is None or slot[0] != provider or time.monotonic() > self._first_until:
                return None
            self._first = None
            return slot

    def done_with(self, slot: Slot) -> None:
        with self._lock:
            self._done.append(slot)

    def take(self) -> list[Slot]:
        """The slots to give back now (a first slot not used too): the caller's round trip
        gives them back."""
        with self._lock:
            done, self._done = self._done, []
            if self._first is not None:
                done.append(self._first)
                self._first = None
        return done

    def keep(self, slots: list[Slot]) -> None:
        """Slots taken for a round trip that failed: given back with a later one."""
        with self._lock:
            self._done[:0] = slots


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease a push holds: how to renew it, and which chunk it is for and for how long
    (a request's slot renews it in the same round trip: `worker/providers/ratelimit.py`;
    empty when the holder gave only `renew`); `slots`: where its requests leave the slots
    they are done with (None: each request gives its own back at once)."""

    renew: Renew
    chunk_id: str = ""
    seconds: float = 0.0
    slots: Slots | None = None


_current: ContextVar[Lease | None] = ContextVar("optout_lease", default=None)


class LeaseLostError(Exception):
    """The chunk was recovered while it was being pushed: send nothing more for it."""

    def __init__(self, message: str = "the chunk's lease ran out and it was recovered") -> None:
        super().__init__(message)


@contextmanager
def holding(
    renew_lease: Renew, chunk_id: str = "", seconds: float = 0.0, slots: Slots | None = None
) -> Iterator[None]:
    """Within this block, every provider request renews the lease first."""
    token = _current.set(Lease(renew_lease, chunk_id, seconds, slots))
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Lease | None:
    """The lease of the push this request is for; None outside a push."""
    return _current.get()


def renew() -> None:
    """Renew the current chunk's lease before a request; raise LeaseLostError if it is
    gone. Outside a push (probes, reconcile listings) there is nothing to renew."""
    held = _current.get()
    if held is not None and not held.renew():
        raise LeaseLostError()
