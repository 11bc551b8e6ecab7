"""A fake VoodooSMS blacklist."""

from __future__ import annotations

import itertools
from typing import Any

from tests.fakes.base import Answer, FakeProvider

PATH = "/blacklist"


def error(code: int, msg: str, status: int = 400) -> Answer:
    return status, {"error": {"code": code, "msg": msg}}, {}


class FakeVoodooSms(FakeProvider):
    ids: dict[str, int]

    def __post_init__(self) -> None:
        self.ids = {}
        self._next = itertools.count(467787)

    def authorized(self, headers: dict[str, str], body: Any) -> bool:
        return headers.get("authorization") == f"Bearer {self.key}"

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        listed = self.listed()
        if method == "POST" and path == PATH:
            number = body.get("number") if isinstance(body, dict) else None
            if not isinstance(number, int):
                return error(33, "Invalid number")
            digits = str(number)
            self.log(method, path, [digits])
            problem = self.failure(digits)
            if problem == "permanent":
                return error(33, "Invalid number")
            if problem == "retry":
                return 500, {"error": "server"}, {}
            if digits in listed:
                return error(53, "Number already in Blacklist")
            listed.add(digits)
            self.ids[digits] = next(self._next)
            return 200, {"id": self.ids[digits], "number": number, "status": "SUCCESS"}, {}
        if method == "GET" and path == PATH:
            if "number" in query:
                digits = query["number"][0]
                self.log("LOOKUP", path, [digits])
                if not listed:
                    return error(51, "Blacklist is empty")
                if digits not in listed:
                    return error(33, "Invalid number")
                return 200, {"id": self.ids[digits], "number": int(digits), "status": "SUCCESS"}, {}
            if not listed:
                return error(51, "Blacklist is empty")
            skip = 0 if self.ignore_skip else int((query.get("skip") or ["0"])[0])
            limit = int((query.get("limit") or ["25"])[0])
            rows = sorted(listed)[skip : skip + limit]
            return 200, [{"id": self.ids[n], "number": int(n)} for n in rows], {}
        if method == "DELETE" and path.startswith(PATH + "/"):
            entry = path.rsplit("/", 1)[1]
            digits = next((n for n, i in self.ids.items() if str(i) == entry), None)
            if digits is None or digits not in listed:
                return error(23, "Invalid ID")
            self.log(method, path, [digits])
            problem = self.failure(digits)
            if problem == "retry":
                return 500, {"error": "server"}, {}
            listed.discard(digits)
            del self.ids[digits]
            return 200, {"status": "SUCCESS", "message": "Number has been removed"}, {}
        return 404, {"error": {"code": 0, "msg": "no route"}}, {}
