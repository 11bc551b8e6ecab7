"""The load generator's requests are what the API expects, and it reads answers right."""

from __future__ import annotations

import asyncio
import json

from tests.perf.load import _response, call_uuid, number, request_for


def _body(raw: bytes) -> dict[str, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))  # fmt: skip
    assert length == len(body)
    loaded: dict[str, object] = json.loads(body)
    return loaded


def test_optouts_carry_consecutive_numbers_per_request() -> None:
    assert _body(request_for("optouts", 2, "h", "t", per_request=3))["phones"] == [
        number(6),
        number(7),
        number(8),
    ]


def test_a_cdr_is_an_outgoing_call_with_the_opt_out_key() -> None:
    body = _body(request_for("cdr", 5, "h", "t"))
    assert body["target"] == number(5) and body["ivruniqueid"] == "bench5"
    assert body["IVR"] == [{"layer_id": 12, "layer_name": "optout", "layer_number": 1,
                            "Dtmf": "9"}]  # fmt: skip


def test_a_dnc_trigger_is_its_own_call() -> None:
    body = _body(request_for("dnc", 5, "h", "t"))
    assert body["requestUUID"] == call_uuid(5) and body["phoneNumber"] == number(5)


def test_response_reads_status_and_skips_the_body() -> None:
    async def read() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 202 Accepted\r\ncontent-length: 4\r\n\r\nabcdNEXT")
        status = await _response(reader)
        return status, await reader.readexactly(4)

    assert asyncio.run(read()) == (202, b"NEXT")
