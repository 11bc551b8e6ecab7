"""One format for structlog and stdlib logging: JSON off a terminal, numbers masked, no secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from worker.runtime import fastjson

_E164ISH = re.compile(r"\+?\d{8,15}")
_NOT_NUMBERS = {"event_id", "phone_sha256", "timestamp", "task_id", "chunk"}
_SECRET_KEYS = {"token", "authorization", "code", "api_key", "password", "secret"}

#: Standard-library loggers held above the level, with the reason.
_QUIET = {
    # httpx logs every request URL at INFO; a lookup URL can hold a full phone number.
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    # The sweep runs every second: Celery's own received/succeeded lines would drown the
    # one structured line per task that we write.
    "celery.app.trace": logging.WARNING,
    "celery.worker.strategy": logging.WARNING,
    "celery.beat": logging.WARNING,
}


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
    # orjson: the stdlib encoder is a noticeable share of a one-number webhook's CPU.
    return fastjson.dumps(value).decode()


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that knows the name it was asked for, for the `logger` key."""

    def __init__(self, file: TextIO | None = None, name: str = "optout") -> None:
        super().__init__(file)
        self.name = name


def _stderr_logger(name: str = "optout", *_: Any) -> _NamedWriteLogger:
    # A line and its newline in one write: PrintLogger's print() writes them apart, and on an
    # unbuffered stderr (PYTHONUNBUFFERED, as in the image; Celery's prefork children) lines
    # of processes sharing it merged into one.
    return _NamedWriteLogger(sys.stderr, name)


class _StderrHandler(logging.Handler):
    """Writes each formatted record and its newline to sys.stderr in one write, as our own
    lines go out; sys.stderr is looked up at each record, as for our own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            stream = sys.stderr
            stream.write(line)
            stream.flush()
        except Exception:  # noqa: BLE001
            self.handleError(record)


def configure(log_format: str = "auto", level: int = logging.INFO) -> None:
    """Configure structlog and the standard library's logging, once per process or again.

    Records of the standard library (Celery, kombu, uvicorn, httpx, warnings) go through the
    same processors as our own lines: the same keys, the same masking, the same renderer,
    on stderr. Whatever handlers the root logger had are replaced."""
    json_out = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_out
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    before: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # A traceback is text like any other: rendered before scrub, so it is masked too.
    after: list[Any] = [structlog.processors.format_exc_info, scrub, renderer]
    structlog.configure(
        processors=[*before, *after],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Looked up at each call, so a replaced sys.stderr (tests, daemons) is honoured.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    # A record's extra fields are left out: they can nest values scrub does not reach.
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=before,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *after],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    # Warnings (Celery's SecurityWarning, deprecations) become records, hence JSON lines too.
    logging.captureWarnings(True)
