"""A fake Daktela v6 blacklist model."""

from __future__ import annotations

import itertools
from typing import Any

from tests.fakes.base import Answer, FakeProvider

MODEL = "/api/v6/blacklistNumbers"


def envelope(result: Any = None, error: Any = None) -> dict[str, Any]:
    return {"error": error or [], "result": result, "_time": "2026-11-22 10:00:00"}


class FakeDaktela(FakeProvider):
    records: dict[str, dict[str, Any]]  # name -> record
    ignore_filters: bool  # answer every record, as an API that knows no such field might

    def __post_init__(self) -> None:
        self.records = {}
        self.ignore_filters = False
        self._next = itertools.count(1)

    def authorized(self, headers: dict[str, str], body: Any) -> bool:
        return headers.get("x-auth-token") == self.key

    def by_number(self, digits: str) -> dict[str, Any] | None:
        return next((r for r in self.records.values() if r["number"].lstrip("+") == digits), None)

    def listed(self, target: str = "Global") -> set[str]:
        return {r["number"].lstrip("+") for r in self.records.values() if r["database"] == target}

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        if method == "GET" and path == MODEL + ".json":
            rows = list(self.records.values())
            i = 0
            while not self.ignore_filters and (
                field := (query.get(f"filter[{i}][field]") or [None])[0]
            ):
                value = query[f"filter[{i}][value]"][0]
                rows = [r for r in rows if str(r.get(field)) == value]
                i += 1
            skip = 0 if self.ignore_skip else int((query.get("skip") or ["0"])[0])
            take = int((query.get("take") or ["100"])[0])
            page = rows[skip : skip + take]
            return 200, envelope({"data": page, "total": len(rows)}), {}
        if method == "POST" and path == MODEL + ".json":
            body = body if isinstance(body, dict) else {}
            number = str(body.get("number") or "")
            digits = number.lstrip("+")
            self.log(method, path, [digits])
            problem = self.failure(digits)
            if not number or problem == "permanent":
                # Daktela answers validation errors inside a 2xx envelope.
                return 200, envelope(None, {"form": {"number": ["Invalid number"]}}), {}
            if problem == "retry":
                return 503, envelope(None, ["Service unavailable"]), {}
            if self.by_number(digits):
                return 200, envelope(None, {"form": {"number": ["Number must be unique"]}}), {}
            name = f"bl_{next(self._next)}"
            self.records[name] = {
                "name": name,
                "number": number,
                "description": body.get("description"),
                "database": body.get("database") or "Global",
                "expired": body.get("expired"),
            }
            return 201, envelope(self.records[name]), {}
        name = path.removeprefix(MODEL + "/").removesuffix(".json")
        if path.startswith(MODEL + "/") and name in self.records:
            record = self.records[name]
            if method == "PUT":
                self.log(method, path, [record["number"].lstrip("+")])
                for key in ("database", "expired", "description"):
                    if isinstance(body, dict) and key in body:
                        record[key] = body[key]
                return 200, envelope(record), {}
            if method == "DELETE":
                self.log(method, path, [record["number"].lstrip("+")])
                problem = self.failure(record["number"].lstrip("+"))
                if problem == "retry":
                    return 503, envelope(None, ["Service unavailable"]), {}
                del self.records[name]
                return 200, envelope(True), {}
        return 404, envelope(None, ["Not found"]), {}
