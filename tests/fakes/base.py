"""What every fake provider shares: knobs for failures, a request log, one list per target."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Answer = tuple[int, Any, dict[str, str]]


@dataclass
class FakeProvider:
    """Subclasses implement `authorized` and `serve`; numbers are kept as digits."""

    key: str = "good-key"
    lists: dict[str, set[str]] = field(default_factory=dict)
    requests: list[tuple[str, str, list[str]]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)  # every request body, as sent
    injected: int = 0  # answers the chaos hook gave instead of the fake
    permanent: set[str] = field(default_factory=set)  # digits that fail for good
    flaky: Counter[str] = field(default_factory=Counter)  # digits -> failures left
    http_status: int | None = None
    http_status_times: int = 0  # -1: for ever
    retry_after: str | None = None
    delay: float = 0.0
    after_request: Callable[[], None] | None = None
    chaos: Callable[[], Answer | None] | None = None  # may answer instead of the fake
    ignore_skip: bool = False  # list reads answer the first page whatever `skip` says
    lock: threading.Lock = field(default_factory=threading.Lock)
    # When each number first reached the fake (CLOCK_MONOTONIC, which every process on the
    # machine shares): what the benchmark times propagation by.
    first_seen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Subclasses set up their own state here."""

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: Any,
    ) -> Answer:
        if self.delay:
            time.sleep(self.delay)
        injected = self.chaos() if self.chaos is not None else None
        if injected is not None:
            with self.lock:
                self.injected += 1
            return injected
        with self.lock:
            self.bodies.append(body)
            if self.http_status is not None and self.http_status_times != 0:
                self.http_status_times -= 1
                extra = {"Retry-After": self.retry_after} if self.retry_after else {}
                answer: Answer = (self.http_status, {"error": "injected"}, extra)
            elif not self.authorized({k.lower(): v for k, v in headers.items()}, body):
                answer = (401, {"error": "Unauthorized"}, {})
            else:
                answer = self.serve(method, path, query, body)
        hook, self.after_request = self.after_request, None
        if hook is not None:
            hook()
        return answer

    def authorized(self, headers: dict[str, str], body: Any) -> bool:
        raise NotImplementedError

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------

    def listed(self, target: str = "default") -> set[str]:
        return self.lists.setdefault(target, set())

    def log(self, method: str, path: str, numbers: list[str]) -> None:
        now = time.monotonic()
        self.requests.append((method, path, numbers))
        for n in numbers:
            self.first_seen.setdefault(n, now)

    def failure(self, digits: str) -> str | None:
        """'permanent', 'retry' or None for a number, consuming one flaky failure."""
        if digits in self.permanent:
            return "permanent"
        if self.flaky[digits] > 0:
            self.flaky[digits] -= 1
            return "retry"
        return None

    def numbers_sent(self) -> list[str]:
        with self.lock:
            return [n for _, _, numbers in self.requests for n in numbers]


def only_digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())
