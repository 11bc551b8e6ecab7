"""Per-number requests with bounded concurrency, for providers without a bulk endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from worker.errors import AuthError, PermanentError, RetryableError
from worker.providers.base import NumberResult, Outcome, PushItem


def per_number(
    items: list[PushItem],
    call: Callable[[PushItem], NumberResult],
    concurrency: int,
) -> dict[str, NumberResult]:
    """Run `call` for each item, at most `concurrency` at once; a request-level error becomes
    that number's result. An AuthError stops the rest and is raised: the provider pauses."""
    refused: list[AuthError] = []
    lock = threading.Lock()

    def one(item: PushItem) -> NumberResult:
        if refused:
            return NumberResult(Outcome.RETRY, "not_sent", "credentials refused")
        try:
            return call(item)
        except AuthError as exc:
            with lock:
                refused.append(exc)
            return NumberResult(Outcome.RETRY, "not_sent", "credentials refused")
        except RetryableError as exc:
            return NumberResult(
                Outcome.RETRY, exc.reason, exc.detail, exc.retry_after, exc.retry_window
            )
        except PermanentError as exc:
            return NumberResult(Outcome.PERMANENT, exc.reason, exc.detail)

    if len(items) == 1 or concurrency <= 1:
        results = {item.e164: one(item) for item in items}
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
            answers = list(pool.map(one, items))
        results = {item.e164: answer for item, answer in zip(items, answers, strict=True)}
    if refused:
        raise refused[0]
    return results
