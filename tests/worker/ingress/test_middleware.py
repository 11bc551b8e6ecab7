"""The body limit as clients meet it, through a real uvicorn on loopback: every client reads
the 413, and an endless or stalled body is still cut."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.ingress.api import create_api
from worker.ingress.middleware import DRAIN_BYTES, BodyLimit

TOKEN = "admin-secret"
LIMIT = 64 * 1024
TOO_LARGE = {"error": "body_too_large", "message": f"request body over {LIMIT} bytes"}
MiB = 1024 * 1024


@contextmanager
def serving(app: ASGIApp, http: str) -> Iterator[str]:
    """`app` under uvicorn on a loopback port of its own, as `optout api` serves it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    config = uvicorn.Config(app, http=http, lifespan="off", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()


# httptools is what runs (uvicorn picks it when installed); h11 is uvicorn's fallback.
@pytest.fixture(params=["httptools", "h11"])
def api(make_ctx: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    ctx = make_ctx(admin_token=TOKEN, max_body_bytes=LIMIT)
    with serving(create_api(lambda: ctx), request.param) as address:
        yield address


def post(address: str, data: Any) -> urllib.request.Request:
    return urllib.request.Request(
        f"http://{address}/v1/optouts",
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )


def urllib_answer(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    """urllib writes the whole body before it reads a byte of the answer."""
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_urllib_sending_a_body_over_the_limit_reads_the_413(api: str) -> None:
    # Unread, a body of this size is a reset every time (a few MiB only some of the times:
    # the sockets' buffers take that much); still within the drain limit.
    size = 6 * MiB
    assert size <= DRAIN_BYTES
    assert urllib_answer(post(api, b"x" * size)) == (413, TOO_LARGE)


def test_a_chunked_body_over_the_limit_is_413_too(api: str) -> None:
    # No Content-Length: the limit is found while the body is read, inside FastAPI.
    chunks = (b"x" * 65536 for _ in range(48))
    with structlog.testing.capture_logs() as events:
        assert urllib_answer(post(api, chunks)) == (413, TOO_LARGE)
        # The line is written once the request is done, after the client has its answer.
        deadline = time.monotonic() + 10
        while not any(e["event"] == "http" for e in events) and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [(e["status"], e.get("error")) for e in events if e["event"] == "http"]
    assert lines == [(413, "body_too_large")]  # not the 400 FastAPI makes of the cut


def test_a_body_within_the_limit_is_still_taken(api: str) -> None:
    body = json.dumps({"action": "add", "phones": ["+972501234567"]}).encode()
    status, answer = urllib_answer(post(api, body))
    assert (status, answer["accepted"]) == (202, 1)


def head(address: str, length: int | None, *extra: str) -> bytes:
    """A POST's request line and headers; no length: the body comes chunked."""
    lines = [
        "POST /v1/optouts HTTP/1.1",
        f"Host: {address}",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_to_end(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def test_expect_100_continue_over_the_limit_is_413_before_any_byte_is_sent(api: str) -> None:
    with connect(api) as conn:
        conn.sendall(head(api, 50 * MiB, "Expect: 100-continue"))
        answer = read_to_end(conn)  # the server closes: the body is never sent
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer
    headers, body = answer.split(b"\r\n\r\n", 1)
    assert b"connection: close" in headers.lower()
    assert json.loads(body) == TOO_LARGE


def test_expect_100_continue_within_the_limit_is_continued(api: str) -> None:
    body = json.dumps({"action": "add", "phones": ["+972501234567"]}).encode()
    with connect(api) as conn:
        conn.sendall(head(api, len(body), "Expect: 100-continue"))
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(body)
        assert conn.recv(65536).startswith(b"HTTP/1.1 202 ")


def test_an_endless_body_is_cut_and_the_server_goes_on(api: str) -> None:
    sent = 0
    with connect(api) as conn:
        conn.sendall(head(api, None))
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        with pytest.raises(OSError):  # a reset or a broken pipe: the server closed
            while sent < 512 * MiB:  # bounded: unless cut, the test fails, never hangs
                conn.sendall(chunk)
                sent += len(chunk)
            read_to_end(conn)  # not cut by then: a timeout, and `sent` fails below
    # What the server drained, plus what the two sockets' buffers held.
    assert sent < LIMIT + DRAIN_BYTES + 64 * MiB
    with urllib.request.urlopen(f"http://{api}/healthz", timeout=10) as response:
        assert response.status == 200


# The drain limits, through a plain app: small ones, so the tests are quick.
async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, answers its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_stalled_body_is_cut_after_the_drain_time(http: str) -> None:
    app = BodyLimit(echo, max_bytes=1024, drain_bytes=MiB, drain_seconds=0.5)
    with (
        serving(app, http) as address,
        connect(address) as conn,
    ):
        conn.sendall(head(address, 100_000) + b"x" * 5000)  # and then nothing
        started = time.monotonic()
        answer = read_to_end(conn)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert 0.3 < waited < 5


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_declared_length_past_the_drain_limit_is_not_waited_for(http: str) -> None:
    app = BodyLimit(echo, max_bytes=1024, drain_bytes=MiB, drain_seconds=60)
    with (
        serving(app, http) as address,
        connect(address) as conn,
    ):
        conn.sendall(head(address, MiB + 1))
        answer = read_to_end(conn)  # closed at once, not after the 60 s
    assert answer.startswith(b"HTTP/1.1 413 ")
