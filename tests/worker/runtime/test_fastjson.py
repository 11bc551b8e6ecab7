"""fastjson: orjson's speed without its refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from worker.runtime.fastjson import JSONResponse, dumps


def test_plain_values_are_compact_json() -> None:
    value = {"a": [1, "ü", None, True], "b": {"c": 1.5}}
    assert json.loads(dumps(value)) == value
    assert b" " not in dumps(value)


def test_integers_beyond_64_bits_fall_back_to_the_standard_library() -> None:
    assert json.loads(dumps({"n": 10**30, "m": [2**64]})) == {"n": 10**30, "m": [2**64]}


def test_what_json_cannot_hold_is_written_as_text_or_null() -> None:
    when = datetime(2026, 11, 23, tzinfo=UTC)
    assert json.loads(dumps({"t": when, "s": frozenset(), "x": float("nan")})) == {
        "t": "2026-11-23T00:00:00+00:00",
        "s": "frozenset()",
        "x": None,
    }


def test_the_response_renders_with_it() -> None:
    response = JSONResponse({"n": 10**30}, status_code=202)
    assert response.status_code == 202
    assert json.loads(response.body) == {"n": 10**30}
