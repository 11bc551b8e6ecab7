"""The API's ASGI middleware: a body size limit and the access log, plain ASGI."""

from __future__ import annotations

import time

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("optout.api")


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLargeError:
            await _too_large(send, self.max_bytes)


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


async def _too_large(send: Send, limit: int) -> None:
    body = (
        b'{"error":"body_too_large","message":"request body over '
        + str(limit).encode()
        + b' bytes"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
