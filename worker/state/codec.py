"""Decoding what Redis and the scripts answer: bytes to text, JSON, empty tables; ms."""

from __future__ import annotations

import json
from typing import Any, cast

import orjson


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def decode(raw: Any) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


#: A ledger's `bl` for its one permanent block at its event time `t` from its one source `rs`
#: (lua/prelude.lua: BLOCK_AT_T).
BLOCK_AT_T = "="


def ledger_blocks(bl: Any, t: Any, rs: Any) -> list[list[Any]]:
    """A ledger's blocks, [start ms, end ms (0: for good), source?] each, from its `bl`, `t`
    and `rs` fields as Redis answers them (bytes, str or None)."""
    if not bl:
        return []
    if text(bl) == BLOCK_AT_T:
        return [[int(t or 0), 0, text(rs or b"")]]
    return cast(list[list[Any]], decode(bl))


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
