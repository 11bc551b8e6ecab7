"""A fake Weya AI call-record DNC endpoint."""

from __future__ import annotations

from typing import Any

from tests.fakes.base import Answer, FakeProvider

PATH = "/api/dnc/add"


class FakeWeya(FakeProvider):
    call_records: set[tuple[str, str]]  # (batchId, requestUUID) known to exist
    emails: int

    def __post_init__(self) -> None:
        self.call_records = set()
        self.emails = 0

    def authorized(self, headers: dict[str, str], body: Any) -> bool:
        return headers.get("authorization") == f"Bearer {self.key}"

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        if method != "POST" or path != PATH:
            return 404, {"message": "Not found", "status": False, "code": 404}, {}
        body = body if isinstance(body, dict) else {}
        missing = [k for k in ("phoneNumber", "batchId", "requestUUID") if not body.get(k)]
        if missing:
            return 400, _fail(400, f"Missing required fields: {', '.join(missing)}"), {}
        digits = str(body["phoneNumber"]).lstrip("+")
        self.log(method, path, [digits])
        if (body["batchId"], body["requestUUID"]) not in self.call_records:
            return 404, _fail(404, "Call record not found for the given batchId"), {}
        problem = self.failure(digits)
        if problem == "permanent" or not digits.isdigit():
            return 400, _fail(400, "Invalid phone number"), {}
        if problem == "retry":
            return 500, _fail(500, "Internal server error"), {}
        listed = self.listed()
        if digits in listed:
            return 400, _fail(400, "Phone number already exists in DNC"), {}
        listed.add(digits)
        self.emails += 1
        return (
            200,
            {
                "message": "Phone number added to DNC successfully",
                "status": True,
                "code": 200,
                "errorMessage": "",
            },
            {},
        )


def _fail(code: int, message: str) -> dict[str, Any]:
    return {"message": message, "status": False, "code": code, "errorMessage": message}
