"""A fake Voicenter blacklist implementing the documented codes (shared/providers.md)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ADD = "/Blacklist/AddBlackList"
REMOVE = "/Blacklist/RemoveBulkFromBlacklist"


@dataclass
class FakeVoicenter:
    """State and behaviour knobs: per-phone codes (optionally only for the next N calls),
    whole-request HTTP status, a delay, and a wrong-code switch for auth failures."""

    code: str = "good-code"
    blacklist: set[str] = field(default_factory=set)
    requests: list[tuple[str, list[str]]] = field(default_factory=list)
    phone_codes: dict[str, int] = field(default_factory=dict)
    phone_code_times: Counter[str] = field(default_factory=Counter)
    http_status: int | None = None
    http_status_times: int = 0
    retry_after: str | None = None
    delay: float = 0.0
    after_request: Callable[[], None] | None = None  # runs once, after the next request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        answer = self._handle(method, path, body)
        hook, self.after_request = self.after_request, None
        if hook is not None:
            hook()
        return answer

    def _handle(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if self.http_status is not None and self.http_status_times != 0:
                self.http_status_times -= 1
                extra = {"Retry-After": self.retry_after} if self.retry_after else {}
                return self.http_status, {"error": "fake"}, extra
            if path not in (ADD, REMOVE) or method != "POST":
                return 404, {"error": "no such endpoint"}, {}
            if not isinstance(body, dict):
                return 200, {"ErrorCode": 2, "ErrorMessage": "Phones missing"}, {}
            if body.get("Code") != self.code:
                return 200, {"ErrorCode": 1, "ErrorMessage": "Invalid Code"}, {}
            phones = body.get("Phones")
            if not isinstance(phones, list) or not phones:
                return 200, {"ErrorCode": 2, "ErrorMessage": "Phones missing or invalid"}, {}
            numbers = [str(p.get("Phone", "")) for p in phones if isinstance(p, dict)]
            self.requests.append((path, numbers))
            answers = []
            for number in numbers:
                code = self._code_for(number)
                if code == 0:
                    if path == ADD:
                        self.blacklist.add(number)
                    else:
                        self.blacklist.discard(number)
                answers.append({"ErrorCode": code, "ErrorMessage": "", "Phone": number})
            return 200, {"ErrorCode": 0, "ErrorMessage": "OK", "Phones": answers}, {}

    def _code_for(self, number: str) -> int:
        if not number.isdigit() or number.startswith("0"):
            return 1
        if number in self.phone_codes:
            if number in self.phone_code_times:
                self.phone_code_times[number] -= 1
                if self.phone_code_times[number] <= 0:
                    del self.phone_code_times[number]
                    return self.phone_codes.pop(number)
            return self.phone_codes[number]
        return 0

    def pushed(self, path: str = ADD) -> list[list[str]]:
        with self.lock:
            return [numbers for p, numbers in self.requests if p == path]
