"""Serve a fake provider on loopback over real HTTP, or in-process as an httpx transport."""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

# (method, path, query, headers, json body) -> (status, json body, extra headers)
Handler = Callable[
    [str, str, dict[str, list[str]], dict[str, str], Any], tuple[int, Any, dict[str, str]]
]


_serving = threading.local()


def client_port() -> int | None:
    """In a handler served by LoopbackServer: the client's local port (which process sent
    the request in hand can be found from it)."""
    conn: socket.socket | None = getattr(_serving, "connection", None)
    try:
        return int(conn.getpeername()[1]) if conn is not None else None
    except OSError:
        return None


def client_waiting() -> bool:
    """In a handler served by LoopbackServer: the client of the request in hand is still
    connected. A client that timed out has hung up (httpx closes the connection), so a fake
    can drop such a request instead of applying it after its client gave up on it."""
    conn: socket.socket | None = getattr(_serving, "connection", None)
    if conn is None:
        return True
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return not readable or conn.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up (drills do that on purpose) is not news.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 with keep-alive and TCP_NODELAY."""

    def __init__(self, handler: Handler) -> None:
        outer = handler

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without it, keep-alive responses stall ~40 ms (Nagle + delayed ACK).
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                url = urlsplit(self.path)
                _serving.connection = self.connection
                status, out, headers = outer(
                    self.command, url.path, parse_qs(url.query), dict(self.headers), body
                )
                data = b"" if out is None else json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _serve  # noqa: N815

        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def mock_transport(handler: Handler) -> httpx.MockTransport:
    """The same fake, in-process, for unit tests."""

    def handle(request: httpx.Request) -> httpx.Response:
        raw = request.content
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        status, out, headers = handler(
            request.method,
            request.url.path,
            parse_qs(request.url.query.decode()),
            dict(request.headers),
            body,
        )
        return httpx.Response(status, json=out, headers=headers)

    return httpx.MockTransport(handle)
