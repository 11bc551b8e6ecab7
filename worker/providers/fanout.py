"""Per-number requests with bounded concurrency, for providers without a bulk endpoint."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from worker.pipeline.lease import LeaseLostError
from worker.providers.base import NumberResult, PushItem, unexpected
from worker.providers.errors import AuthError, PermanentError, PushInterrupted, RetryableError


def per_number(
    items: list[PushItem],
    call: Callable[[PushItem], NumberResult],
    concurrency: int,
) -> dict[str, NumberResult]:
    """Run `call` for each item, at most `concurrency` at once; a request-level error becomes
    that number's result. Credentials refused (AuthError), the chunk's lease lost or Redis
    failing stop the rest: nothing more is sent, and PushInterrupted carries the answers
    already had, so the numbers that succeeded are recorded rather than pushed again (each
    Weya add emails someone)."""
    stopped: list[Exception] = []
    lock = threading.Lock()
    answered: dict[str, NumberResult] = {}

    def one(item: PushItem) -> None:
        if stopped:
            return
        try:
            result = call(item)
        except (AuthError, LeaseLostError, redis.RedisError) as exc:
            # A Redis error (renewing the lease, taking a rate-limit slot) is not the
            # number's: the push stops and its task is retried, as for any Redis failure.
            with lock:
                stopped.append(exc)
            return
        except (RetryableError, PermanentError) as exc:
            result = NumberResult.of(exc)
        except Exception as exc:  # noqa: BLE001
            result = unexpected(exc)
        with lock:
            answered[item.e164] = result

    if len(items) == 1 or concurrency <= 1:
        for item in items:
            one(item)
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
            # Each request renews the chunk's lease, which lives in the caller's context.
            runs = [pool.submit(contextvars.copy_context().run, one, item) for item in items]
            for run in runs:
                run.result()
    if stopped:
        raise PushInterrupted(stopped[0], answered)
    return answered
