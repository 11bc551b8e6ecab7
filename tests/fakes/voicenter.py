"""A fake Voicenter blacklist implementing the documented codes."""

from __future__ import annotations

from typing import Any

from tests.fakes.base import Answer, FakeProvider

ADD = "/Blacklist/AddBlackList"
REMOVE = "/Blacklist/RemoveBulkFromBlacklist"


class FakeVoicenter(FakeProvider):
    """`permanent` numbers answer per-phone code 1, `flaky` ones code 2; a wrong Code gets
    top-level ErrorCode 1. The API code is `key` ("good-code")."""

    def __post_init__(self) -> None:
        if self.key == "good-key":
            self.key = "good-code"

    @property
    def blacklist(self) -> set[str]:
        return self.listed()

    def authorized(self, headers: dict[str, str], body: Any) -> bool:
        return True  # Voicenter authenticates in the body (ErrorCode 1)

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        if path not in (ADD, REMOVE) or method != "POST":
            return 404, {"error": "no such endpoint"}, {}
        if not isinstance(body, dict):
            return 200, {"ErrorCode": 2, "ErrorMessage": "Phones missing"}, {}
        if body.get("Code") != self.key:
            return 200, {"ErrorCode": 1, "ErrorMessage": "Invalid Code"}, {}
        phones = body.get("Phones")
        if not isinstance(phones, list) or not phones:
            return 200, {"ErrorCode": 2, "ErrorMessage": "Phones missing or invalid"}, {}
        numbers = [str(p.get("Phone", "")) for p in phones if isinstance(p, dict)]
        self.log(method, path, numbers)
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
        problem = self.failure(number)
        return {"permanent": 1, "retry": 2}.get(problem or "", 0)

    def pushed(self, path: str = ADD) -> list[list[str]]:
        with self.lock:
            return [numbers for _, p, numbers in self.requests if p == path]
