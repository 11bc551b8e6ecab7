"""A fake Phonely agent block list."""

from __future__ import annotations

from typing import Any

from tests.fakes.base import Answer, FakeProvider

PATH = "/api/agent-block-list"


class FakePhonely(FakeProvider):
    uid: str = "uid-1"

    def authorized(self, headers: dict[str, str], body: Any) -> bool:
        return headers.get("x-authorization") == self.key

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        if path != PATH:
            return 404, {"error": "Not found"}, {}
        if method == "GET":
            agent = (query.get("agentId") or [""])[0]
            if not agent or not (query.get("uid") or [""])[0]:
                return 400, {"error": "Invalid search params"}, {}
            return 200, {"blockList": sorted("+" + n for n in self.listed(agent))}, {}
        if not isinstance(body, dict) or not isinstance(body.get("numbers"), list):
            return 400, {"error": "Invalid request body"}, {}
        if body.get("uid") != self.uid or not body.get("agentId"):
            return 400, {"error": "Invalid request body"}, {}
        agent = str(body["agentId"])
        numbers = [str(n) for n in body["numbers"]]
        self.log(method, f"{PATH}#{agent}", [n.lstrip("+") for n in numbers])
        done, failed = [], []
        target = self.listed(agent)
        for number in numbers:
            digits = number.lstrip("+")
            if not number.startswith("+") or not digits.isdigit():
                failed.append({"number": number, "reason": "Invalid phone number format"})
                continue
            problem = self.failure(digits)
            if problem == "permanent":
                failed.append({"number": number, "reason": "Invalid phone number format"})
            elif problem == "retry":
                failed.append({"number": number, "reason": "Temporary storage error"})
            elif method == "POST":
                if digits in target:
                    failed.append({"number": number, "reason": "Number already in block list"})
                else:
                    target.add(digits)
                    done.append(number)
            elif digits not in target:
                failed.append({"number": number, "reason": "Number not found in block list"})
            else:
                target.discard(digits)
                done.append(number)
        key = "added" if method == "POST" else "removed"
        return 200, {"message": "ok", key: done, "failed": failed}, {}
