"""Decoding what Redis and the scripts answer: bytes to text, JSON, empty tables; ms."""

from __future__ import annotations

import json
from typing import Any

import orjson


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def decode(raw: Any) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


def lua_json(raw: Any) -> Any:
    """JSON a script wrote (its answer, a chunk), read with orjson: per request and per
    chunk. (cjson writes non-ASCII as UTF-8, never as a \\u escape of a surrogate, which
    orjson refuses.)"""
    return orjson.loads(raw)


# cjson writes an empty Lua table as {} (Redis) or [] (fakeredis): both mean "none".


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
