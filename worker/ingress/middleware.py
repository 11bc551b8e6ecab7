"""The API's ASGI middleware: a body size limit and the access log, plain ASGI."""

from __future__ import annotations

import contextlib
import time

import anyio
import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("optout.api")


#: After a 413, at most this much of the rest of the body is read and dropped, for at most
#: this long, before the connection is closed: a client that writes its whole body before
#: reading (urllib, many PHP and Java senders) then reads the 413 instead of a reset. A bigger
#: or slower body is cut, so an endless one cannot hold the connection.
DRAIN_BYTES = 8 * 1024 * 1024
DRAIN_SECONDS = 5.0


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read into memory, in a way every
    client reads: a client that waits for `100 Continue` is answered before it sends the
    body; one already sending has the rest drained (up to the drain limits) before the close."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        drain_bytes: int = DRAIN_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        waits = False
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"expect" and value.lower() == b"100-continue":
                waits = True
        if declared is not None and declared > self.max_bytes:
            # uvicorn sends 100 Continue only when the app first reads the body: answered
            # unread, a client that waits for it never sends the body. A body past the drain
            # limit would be cut anyway: no use reading any of it.
            drain = not waits and declared <= self.drain_bytes
            await self._refuse(send, receive if drain else None)
            return
        if declared is not None:
            # The server reads no byte past Content-Length into this request's body.
            await self.app(scope, receive, send)
            return
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._refuse(send, receive if message.get("more_body") else None)
                    raise _TooLargeError
            return message

        async def unless_refused(message: Message) -> None:
            # FastAPI answers any error while it reads a body with a 400 of its own: the
            # client has had its 413.
            if not refused:
                await send(message)

        with contextlib.suppress(_TooLargeError):  # answered in limited()
            await self.app(scope, limited, unless_refused)

    async def _refuse(self, send: Send, rest: Receive | None) -> None:
        """Answer 413 and close the connection; with `rest`, drain the body first."""
        body = (
            b'{"error":"body_too_large","message":"request body over '
            + str(self.max_bytes).encode()
            + b' bytes"}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # Whatever of the body is still unread must not be taken for the next
                    # request on this connection.
                    (b"connection", b"close"),
                ],
            }
        )
        if rest is None:
            await send({"type": "http.response.body", "body": body})
            return
        # The answer goes out now, for clients that read while they send; the server closes
        # the connection once the response is complete, so it completes after the drain.
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await self._drain(rest)
        await send({"type": "http.response.body", "body": b""})

    async def _drain(self, receive: Receive) -> None:
        read = 0
        with anyio.move_on_after(self.drain_seconds):
            while read < self.drain_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                read += len(message.get("body", b""))
                if not message.get("more_body"):
                    return


class AccessLog:
    """One log line per request. Plain ASGI: Starlette's BaseHTTPMiddleware costs a task
    and a stream per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        body = bytearray()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status >= 400 and len(body) < _ERROR_BODY_BYTES:
                body.extend(message.get("body", b"")[:_ERROR_BODY_BYTES])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The path only: a webhook token may ride in the query string; of an error, its
            # word only, never the body (it can echo what was sent).
            log.info(
                "http",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
                **({"error": _error_word(bytes(body))} if status >= 400 else {}),
            )


#: An error body is read this far for its `error` word.
_ERROR_BODY_BYTES = 4096


def _error_word(body: bytes) -> str:
    """The `error` of an error body ({"error": word, ...}); "-" when there is none."""
    try:
        word = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "-"
    return word if isinstance(word, str) and word.isidentifier() else "-"


class _TooLargeError(Exception):
    pass
