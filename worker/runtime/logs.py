"""One format for structlog and stdlib logging: JSON off a terminal, numbers masked, no secrets."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol, TextIO

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


def _line_logger(sink: Sink | None) -> Any:
    def factory(name: str = "optout", *_: Any) -> _NamedWriteLogger:
        # A line and its newline in one write: PrintLogger's print() writes them apart, and
        # on an unbuffered stderr (PYTHONUNBUFFERED, as in the image; Celery's prefork
        # children) lines of processes sharing it merged into one.
        return _NamedWriteLogger(sink or sys.stderr, name)

    return factory


class Sink(Protocol):
    """Where log lines go: sys.stderr, or a LogFile."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


class LogFile:
    """Whole lines appended to `path`, size-capped: past `max_bytes` the file becomes
    `path.1` (and `.1` becomes `.2`, up to `backups`), so a long-running `optout up` never
    fills the disk. With `echo`, each line is written there too (`--verbose`).

    One writer per file is exact; a second process (two CLI commands at once) notices the
    file was rotated under it and follows, so at worst a rotation keeps a few lines less."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 10 * 2**20,
        backups: int = 3,
        echo: TextIO | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.echo = echo
        self._lock = threading.Lock()  # the supervisor's reader threads share one file
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self._open()

    def _open(self) -> TextIO:
        return self.path.open("a", encoding="utf-8", errors="replace")

    def write(self, text: str, /) -> int:
        with self._lock:
            self._follow_or_rotate(len(text))
            self._handle.write(text)
            self._handle.flush()
        if self.echo is not None:
            self.echo.write(text)
            self.echo.flush()
        return len(text)

    def flush(self) -> None:
        """Every line is flushed as it is written."""

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    def _follow_or_rotate(self, adding: int) -> None:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        if on_disk is None or on_disk.st_ino != os.fstat(self._handle.fileno()).st_ino:
            # Rotated (or removed) by another writer: write where the name now points.
            self._handle.close()
            self._handle = self._open()
            return
        if on_disk.st_size and on_disk.st_size + adding > self.max_bytes:
            self._handle.close()
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            if self.backups:
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink()
            self._handle = self._open()


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that knows the name it was asked for, for the `logger` key."""

    def __init__(self, file: Any = None, name: str = "optout") -> None:
        super().__init__(file)
        self.name = name


class _LineHandler(logging.Handler):
    """Writes each formatted record and its newline in one write, as our own lines go out;
    the sink is looked up at each record (sys.stderr may be replaced), as for our own lines."""

    def __init__(self, sink: Sink | None) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            stream = self.sink or sys.stderr
            stream.write(line)
            stream.flush()
        except Exception:  # noqa: BLE001
            self.handleError(record)


def configure(
    log_format: str = "auto", level: int = logging.INFO, sink: Sink | None = None
) -> None:
    """Configure structlog and the standard library's logging, once per process or again.

    Records of the standard library (Celery, kombu, uvicorn, httpx, warnings) go through the
    same processors as our own lines: the same keys, the same masking, the same renderer,
    on stderr (the services: containers and systemd read it) or on `sink` (a LogFile: the
    CLI's own output stays its messages). Whatever handlers the root logger had are
    replaced."""
    tty = (sink or sys.stderr).isatty()
    json_out = log_format == "json" or (log_format == "auto" and not tty)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_out
        else structlog.dev.ConsoleRenderer(colors=tty)
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
        logger_factory=_line_logger(sink),
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler(sink)
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
