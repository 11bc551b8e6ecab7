"""structlog set-up: JSON off a terminal, pretty on one; numbers masked, secrets dropped."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from worker.runtime import fastjson

_E164ISH = re.compile(r"\+?\d{8,15}")
_NOT_NUMBERS = {"event_id", "phone_sha256", "timestamp", "task_id", "chunk"}
_SECRET_KEYS = {"token", "authorization", "code", "api_key", "password", "secret"}


def _mask_text(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        value = match.group(0)
        return value[:6] + "***" + value[-4:]

    return _E164ISH.sub(repl, text)


def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: mask anything shaped like a phone number, drop secret fields."""
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
            continue
        value = event[key]
        if isinstance(value, str) and key not in _NOT_NUMBERS:
            event[key] = _mask_text(value)
    return event


def _dumps(value: Any, **_: Any) -> str:
    # orjson: the stdlib encoder was a tenth of the CPU of a one-number webhook.
    return fastjson.dumps(value).decode()


def _stderr_logger(*_: Any) -> structlog.WriteLogger:
    # A line and its newline in one write: PrintLogger's print() writes them apart, and on an
    # unbuffered stderr (PYTHONUNBUFFERED, as in the image; Celery's prefork children) lines
    # of processes sharing it merged into one.
    return structlog.WriteLogger(sys.stderr)


def configure(log_format: str = "auto", level: int = logging.INFO) -> None:
    """Configure structlog once per process."""
    json_out = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_out
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Looked up at each call, so a replaced sys.stderr (tests, daemons) is honoured.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # httpx logs every request URL at INFO; a lookup URL can hold a full phone number.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
