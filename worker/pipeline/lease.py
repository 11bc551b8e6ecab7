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

#: Renews the current chunk's lease; False when the chunk was recovered meanwhile.
Renew = Callable[[], bool]

_current: ContextVar[Renew | None] = ContextVar("optout_lease", default=None)


class LeaseLostError(Exception):
    """The chunk was recovered while it was being pushed: send nothing more for it."""


@contextmanager
def holding(renew_lease: Renew) -> Iterator[None]:
    """Within this block, every provider request renews the lease first."""
    token = _current.set(renew_lease)
    try:
        yield
    finally:
        _current.reset(token)


def renew() -> None:
    """Renew the current chunk's lease before a request; raise LeaseLostError if it is
    gone. Outside a push (probes, reconcile listings) there is nothing to renew."""
    current = _current.get()
    if current is not None and not current():
        raise LeaseLostError("the chunk's lease ran out and it was recovered")
