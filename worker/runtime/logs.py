"""One format for structlog and stdlib logging: JSON off a terminal, numbers masked, no secrets."""

from __future__ import annotations

import contextlib
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
    file was rotated under it and follows, so at worst a rotation keeps a few lines less.

    Writing never raises: logging is never worth stopping a service, or the reader of a
    child's output, for. A line the file cannot take (disk full, permission denied) is
    dropped and counted in `dropped`; a rotation that fails (a rename refused) is counted
    in `failed_rotations`, and the lines go on into the current file, the next rotation
    tried once it has grown by another tenth of `max_bytes`. Each of the two is said once
    on stderr, the first time it happens."""

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
        self.dropped = 0
        self.failed_rotations = 0
        self._rotate_from = 0  # after a failed rotation: the size to try again at
        self._said: set[str] = set()
        self._lock = threading.Lock()  # the supervisor's reader threads share one file
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened here, so a command can tell at once that it cannot log to the file.
        self._handle: TextIO | None = self._open()

    def _open(self) -> TextIO:
        return self.path.open("a", encoding="utf-8", errors="replace")

    def write(self, text: str, /) -> int:
        with self._lock:
            try:
                self._follow_or_rotate(len(text))
                if self._handle is None:
                    self._handle = self._open()
                self._handle.write(text)
                self._handle.flush()
            except (OSError, ValueError) as exc:
                # Dropped, not kept to retry: a buffer of unwritten lines would grow for as
                # long as the disk stays full. The handle goes too (its buffer still holds
                # the line); the next line opens the file again.
                self._close()
                self.dropped += 1
                self._say_once("write", f"cannot write the log file {self.path} ({exc}): "
                               "its lines are dropped until it can be written again")  # fmt: skip
        if self.echo is not None:
            # The echo is a terminal that may be gone (a closed ssh session): the file has it.
            with contextlib.suppress(OSError, ValueError):
                self.echo.write(text)
                self.echo.flush()
        return len(text)

    def flush(self) -> None:
        """Every line is flushed as it is written."""

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError, ValueError):
                self._handle.close()
            self._handle = None

    def _follow_or_rotate(self, adding: int) -> None:
        try:
            on_disk: os.stat_result | None = os.stat(self.path)
        except OSError:
            on_disk = None
        if self._handle is None:
            return  # opened by the write, where the name points now
        if on_disk is None or on_disk.st_ino != os.fstat(self._handle.fileno()).st_ino:
            # Rotated (or removed) by another writer: write where the name now points.
            self._close()
            return
        size = on_disk.st_size
        if size and size + adding > self.max_bytes and size >= self._rotate_from:
            self._close()
            try:
                self._rotate()
            except OSError as exc:
                # The file stays where it is and the lines go on into it: a log that grows
                # past its cap is better than one that stops. Tried again a little later,
                # not at every line.
                self.failed_rotations += 1
                self._rotate_from = size + max(1, self.max_bytes // 10)
                self._say_once("rotate", f"cannot rotate the log file {self.path} ({exc}): "
                               "writing on into it past its size cap")  # fmt: skip
            else:
                self._rotate_from = 0
            # Either way the write opens `path`: the new file, or the current one again.

    def _rotate(self) -> None:
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def _say_once(self, kind: str, message: str) -> None:
        """One line on stderr the first time a kind of failure happens: the file cannot
        say it, and a line per failure would drown the terminal."""
        if kind in self._said:
            return
        self._said.add(kind)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"optout: {message}\n")
            sys.stderr.flush()


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
