"""The lease of the chunk a push is working on, renewed before every provider request.

A push holds its chunk by a lease that `recover` gives back once it runs out (the worker is
presumed dead). Per-number providers send a whole chunk inside one `Provider.push` call, so
renewing between calls is not enough: every request renews first (`worker/providers/http.py`
calls `renew`), and a request whose lease is gone is never sent. The holder lives in a
context variable so that adapters need not carry it; `worker/providers/fanout.py` copies the
context into its threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

#: Renews the current chunk's lease; False when the chunk was recovered meanwhile.
Renew = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease a push holds: how to renew it, and which chunk it is for and for how long
    (a request's slot renews it in the same round trip: `worker/providers/ratelimit.py`;
    empty when the holder gave only `renew`)."""

    renew: Renew
    chunk_id: str = ""
    seconds: float = 0.0


_current: ContextVar[Lease | None] = ContextVar("optout_lease", default=None)


class LeaseLostError(Exception):
    """The chunk was recovered while it was being pushed: send nothing more for it."""

    def __init__(self, message: str = "the chunk's lease ran out and it was recovered") -> None:
        super().__init__(message)


@contextmanager
def holding(renew_lease: Renew, chunk_id: str = "", seconds: float = 0.0) -> Iterator[None]:
    """Within this block, every provider request renews the lease first."""
    token = _current.set(Lease(renew_lease, chunk_id, seconds))
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
