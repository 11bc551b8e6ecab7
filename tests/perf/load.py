"""A small HTTP/1.1 load generator: keep-alive connections on one event loop, a few tens of
microseconds of CPU per request, so the server under test keeps the machine's cores.

    python -m tests.perf.load http://127.0.0.1:8000 --kind optouts --count 100000

Kinds: `optouts` (one number per `/v1/optouts` request), `cdr` (one opt-out CDR per
Voicenter webhook request), `dnc` (one call-record DNC trigger), `noop` (`GET /healthz`).
Request i carries number `number(i)`. `--rate` paces requests (open loop); `--seconds`
stops after a duration instead of a count; `--times FILE` writes each request's send time
(CLOCK_MONOTONIC, shared by every process on the machine) for latency measurements.
Prints one JSON object: requests, statuses, seconds, cpu_seconds, p50/p99 response ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: The call batch of every `dnc` request; request i is call `call_uuid(i)` in it.
BATCH_ID = "64e5f12345abcdef98765432"


def call_uuid(i: int) -> str:
    return f"bench-call-{i}"


def number(i: int) -> str:
    """The i-th benchmark number: a valid Israeli mobile, E.164."""
    return f"+97259{i:07d}"


def request_for(kind: str, i: int, host: str, token: str, per_request: int = 1) -> bytes:
    if kind == "noop":
        return f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    body: dict[str, Any]
    if kind == "optouts":
        path = "/v1/optouts"
        first = i * per_request
        body = {"action": "add", "phones": [number(k) for k in range(first, first + per_request)]}
    elif kind == "cdr":
        path = "/webhooks/voicenter/cdr"
        body = {
            "ivruniqueid": f"bench{i}",
            "caller": "0722776772",
            "target": number(i),
            "time": int(time.time()),
            "type": "Extension Outgoing",
            "direction": "outgoing",
            "status": "ANSWER",
            "IVR": [{"layer_id": 12, "layer_name": "optout", "layer_number": 1, "Dtmf": "9"}],
        }
    elif kind == "dnc":
        path = "/webhooks/dnc"
        body = {"phoneNumber": number(i), "batchId": BATCH_ID, "requestUUID": call_uuid(i)}
    else:
        raise ValueError(f"unknown kind {kind!r}")
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@dataclass
class Load:
    kind: str
    host: str
    port: int
    token: str
    first: int
    count: int | None
    seconds: float | None
    rate: float | None
    per_request: int = 1
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sent: dict[int, float] = field(default_factory=dict)
    _next: Iterator[int] = field(default_factory=itertools.count)

    def take(self, started: float) -> tuple[int, float] | None:
        """The next request's index and when it is due, or None when the run is over."""
        k = next(self._next)
        if self.count is not None and k >= self.count:
            return None
        due = started + k / self.rate if self.rate else 0.0
        if self.seconds is not None and max(due, time.monotonic()) - started >= self.seconds:
            return None
        return self.first + k, due

    async def connection(self, started: float) -> None:
        reader, writer = await self._open()
        while (job := self.take(started)) is not None:
            i, due = job
            if due and (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            raw = request_for(self.kind, i, self.host, self.token, self.per_request)
            for attempt in range(3):
                sent = time.monotonic()
                try:
                    writer.write(raw)
                    status = await _response(reader)
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    writer.close()
                    self.statuses["connection_error"] += 1
                    if attempt == 2:
                        return
                    reader, writer = await self._open()
            self.sent[i] = sent
            self.latencies.append(time.monotonic() - sent)
            self.statuses[str(status)] += 1
        writer.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def run(load: Load, connections: int) -> dict[str, Any]:
    """Drive the load and answer the figures (this process's CPU included)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # a slower loop still measures; only the generator's CPU grows
        pass
    cpu0 = _cpu()

    started = time.monotonic()

    async def main() -> None:
        await asyncio.gather(*(load.connection(started) for _ in range(connections)))

    asyncio.run(main())
    seconds = time.monotonic() - started
    lat = sorted(load.latencies)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else 0.0

    return {
        "requests": len(lat),
        "statuses": dict(load.statuses),
        "started": started,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(_cpu() - cpu0, 3),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--kind", choices=["optouts", "cdr", "dnc", "noop"], default="optouts")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--first", type=int, default=0, help="index of the first request")
    parser.add_argument("--per-request", type=int, default=1, help="optouts: numbers each")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: flat out)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--token", default="bench")
    parser.add_argument("--times", type=Path, default=None, help="write send times here")
    args = parser.parse_args(argv)
    if args.count is None and args.seconds is None:
        parser.error("give --count or --seconds")
    url = urlsplit(args.url)
    load = Load(args.kind, url.hostname or "127.0.0.1", url.port or 80, args.token, args.first,
                args.count, args.seconds, args.rate, args.per_request)  # fmt: skip
    figures = run(load, args.connections)
    if args.times:
        args.times.write_text(json.dumps({str(i): t for i, t in load.sent.items()}))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
