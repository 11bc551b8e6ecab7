"""Provider rate limits shared by every worker, applied at the HTTP transport."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import httpx

from worker.pipeline import lease
from worker.state.store import Store


class SharedLimitTransport(httpx.BaseTransport):
    """Wraps a provider's transport: every request first takes a slot in Redis (leased, so a
    killed worker leaks none), and none is sent while a Retry-After holds the provider for
    all workers: those answer a local 429 with the time left. A request of a push renews
    its chunk's lease in the slot's round trip (`worker/pipeline/lease.py`), and raises
    LeaseLostError, unsent, when the chunk is gone; its slot is given back in the push's
    next round trip (`lease.Slots`), else at once. A bulk push's first request has its slot
    already, taken in the round trip that opened the chunk (`lease.Slots.first`)."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        store: Store,
        provider: str,
        *,
        rps: float,
        concurrency: int,
        lease_seconds: float,
        max_wait_seconds: float = 30.0,
    ) -> None:
        self._inner = inner
        self._store = store
        self._provider = provider
        self._rps = rps
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._max_wait = max_wait_seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        held = lease.current()
        done = held.slots if held is not None else None
        first = done.first(self._provider) if done is not None else None
        acquired = first[1] if first is not None else self._acquire(request, held, done)
        if isinstance(acquired, httpx.Response):
            return acquired
        token = acquired
        try:
            response = self._inner.handle_request(request)
            response.read()  # the slot covers the whole exchange
            return response
        finally:
            if done is not None:
                done.done_with((self._provider, token))  # given back in the push's next trip
            else:
                self._store.give_back_slots([(self._provider, token)])

    def _acquire(
        self, request: httpx.Request, held: lease.Lease | None, done: lease.Slots | None
    ) -> str | httpx.Response:
        """A slot's token, once one is free; a local 429 while a Retry-After holds the
        provider."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._max_wait
        renew = None
        if held is not None:
            if held.chunk_id:
                renew = (held.chunk_id, held.seconds)
            else:
                lease.renew()  # a holder that named no chunk renews its own way
        while True:
            give_back = done.take() if done is not None else []
            try:
                wait_ms = self._store.acquire_slot(
                    self._provider,
                    token,
                    rps=self._rps,
                    concurrency=self._concurrency,
                    lease_seconds=self._lease,
                    renew=renew,
                    give_back=give_back,
                )
            except BaseException:
                if done is not None:
                    done.keep(give_back)  # the push's completion gives them back
                raise
            if wait_ms is None:
                raise lease.LeaseLostError()
            if wait_ms == 0:
                return token
            if wait_ms < 0:
                return httpx.Response(
                    429,
                    headers={"Retry-After": str(math.ceil(-wait_ms / 1000))},
                    json={"error": "held by an earlier Retry-After"},
                    request=request,
                )
            if time.monotonic() > deadline:
                raise httpx.PoolTimeout("no free provider slot", request=request)
            time.sleep(wait_ms / 1000)

    def close(self) -> None:
        self._inner.close()


class LimitedClient(httpx.Client):
    """A provider's client whose every request goes through a SharedLimitTransport, which
    renews the push's lease with the request's slot: `worker/providers/http.py`'s `send`
    leaves the renewal to it (one round trip a request instead of two)."""

    def __init__(self, transport: SharedLimitTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
