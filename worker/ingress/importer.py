"""CSV files in and out: bulk import of opt-outs, and scrubbing a dial list against the ledger.

Both stream the file (a million rows never sit in memory at once). The phone is the column
named `phone` (or `--column`), else the first column; an optional `name` column labels it.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from worker.domain.phones import Normalised, normalise
from worker.pipeline.accept import AcceptError, Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.iterables import batched

BATCH = 1000
Progress = Callable[[int], None]  # bytes read so far


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0  # distinct numbers accepted
    rejected: int = 0  # rows refused, each in the report with its reason
    duplicates: int = 0  # rows repeating a number an earlier row of the file had
    repeated_batches: int = 0  # batches already imported (a re-run)
    report_written: bool = False  # the report exists only when a row was rejected


class _Report:
    """The rejected rows' report, written only once there is a row to put in it (a report
    left from an earlier run of the same file is removed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.unlink(missing_ok=True)
        self._out: IO[str] | None = None
        self._writer: Any = None

    def add(self, line: int, phone: str, reason: str | None) -> None:
        if self._writer is None:
            self._out = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._out)
            self._writer.writerow(["line", "input", "reason"])
        self._writer.writerow([line, phone, reason or ""])

    def close(self) -> bool:
        """Whether a report was written."""
        if self._out is not None:
            self._out.close()
        return self._out is not None


def _fingerprint(e164: str) -> int:
    # 8 bytes a number, not the string: a million distinct numbers stay a few tens of MB.
    return int.from_bytes(hashlib.blake2b(e164.encode(), digest_size=8).digest(), "big")


class _CountingReader:
    """Counts the bytes a text file has given, for a progress bar over its size."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.read += len(line.encode())
            yield line


@dataclass
class _Table:
    """A CSV's data rows and where the phone (and the optional name) sit in them."""

    header: list[str] | None  # None: the file has none, its first row is data
    phone_at: int
    name_at: int | None
    rows: Iterator[list[str]]


#: Header names taken as the phone column when `--column` is not given (compared without
#: case, spaces, '_' or '-').
PHONE_HEADERS = ("phone", "phonenumber", "mobile", "mobilenumber", "tel", "telephone",
                 "number", "msisdn", "cell")  # fmt: skip


class ColumnError(ValueError):
    """`--column` names a column the header lacks: a wrong option, not a failed import."""


def _bare(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in " _-")


def _table(rows: Iterator[list[str]], column: str | None) -> _Table | None:
    """The table of a CSV (None when it is empty). The first row is a header when it names
    the phone column (`column`, else one of PHONE_HEADERS) or holds no digit at all (a
    data row of a phone list does); the phone is that column, else the first. Naming a
    column the header lacks is an error, not a guess."""
    first = next(rows, None)
    if first is None:
        return None
    bare = [_bare(c) for c in first]
    wanted = [_bare(column)] if column else list(PHONE_HEADERS)
    found = next((bare.index(w) for w in wanted if w in bare), None)
    is_header = found is not None or not any(ch.isdigit() for cell in first for ch in cell)
    if column and found is None:
        shown = ", ".join(repr(c.strip()) for c in first) if is_header else "none"
        raise ColumnError(f"no column named {column!r}; the file's columns: {shown}")
    if not is_header:
        return _Table(None, 0, None, _chain(first, rows))
    name_at = bare.index("name") if "name" in bare else None
    return _Table(first, found or 0, name_at, rows)


Dialect = type[csv.Dialect] | csv.Dialect


def _dialect(handle: IO[str]) -> Dialect:
    """The file's own delimiter (comma, semicolon, tab or pipe), sniffed from its start; a
    comma when it cannot tell."""
    sample = handle.read(64 * 1024)
    handle.seek(0)
    try:
        return csv.Sniffer().sniff(sample, ",;\t|")
    except csv.Error:
        return csv.excel


def _reader(handle: IO[str], counting: _CountingReader) -> Iterator[list[str]]:
    """CSV rows read with the file's own dialect."""
    return csv.reader(counting, _dialect(handle))


def _rows(rows: Iterator[list[str]], column: str | None) -> Iterator[tuple[int, str, str]]:
    """(line number, phone cell, name cell) for every data row."""
    table = _table(rows, column)
    if table is None:
        return
    line = 0 if table.header is None else 1
    for row in table.rows:
        line += 1
        if not row or not any(cell.strip() for cell in row):
            continue
        phone = _cell(row, table.phone_at)
        name = _cell(row, table.name_at)
        yield line, phone, name


def _cell(row: list[str], at: int | None) -> str:
    return row[at] if at is not None and at < len(row) else ""


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def import_csv(
    ctx: Context,
    path: Path,
    *,
    action: Action,
    source: str,
    as_of: datetime | None,
    report_path: Path,
    column: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Accept every row of a CSV as opt-outs (or opt-ins); rejected rows go to the report.

    Each batch's idempotency key is the hash of its rows, so running the same file twice
    writes nothing twice. A remove needs `as_of`: an old CRM list must never undo opt-outs
    made after it was exported.
    """
    if action is Action.REMOVE and as_of is None:
        raise AcceptError("remove_needs_as_of", "a remove import needs --as-of TIME")
    report = ImportReport()
    rejected = _Report(report_path)
    seen: set[int] = set()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            counting = _CountingReader(handle)
            for batch in batched(_rows(_reader(handle, counting), column), BATCH):
                report.rows += len(batch)
                _import_batch(ctx, path, batch, action, source, as_of, report, rejected, seen)
                if progress is not None:
                    progress(counting.read)
    finally:
        report.report_written = rejected.close()
    return report


def _import_batch(
    ctx: Context,
    path: Path,
    batch: list[tuple[int, str, str]],
    action: Action,
    source: str,
    as_of: datetime | None,
    report: ImportReport,
    rejected: _Report,
    seen: set[int],
) -> None:
    digest = hashlib.sha256("\n".join(f"{p}\t{n}" for _, p, n in batch).encode()).hexdigest()
    event = Event(
        source=source,
        action=action,
        phones=[PhoneInput(p, n) for _, p, n in batch],
        reason=f"import {path.name}",
        idempotency_key=f"import:{action.value}:{digest}",
        occurred_at=as_of,
    )
    try:
        result = accept(ctx, event)
    except AcceptError as exc:
        if exc.reason != "no_valid_phones":
            raise
        for line, phone, _ in batch:
            reason = normalise(phone, ctx.settings.region_for(source))
            why = reason.reason if not isinstance(reason, Normalised) else exc.reason
            rejected.add(line, phone, why)
        report.rejected += len(batch)
        return
    report.repeated_batches += int(result.duplicate)
    for (line, phone, _), outcome in zip(batch, result.phones, strict=True):
        if outcome.status == "rejected":
            rejected.add(line, phone, outcome.reason)
            report.rejected += 1
            continue
        mark = _fingerprint(outcome.phone or phone)
        if mark in seen:
            report.duplicates += 1
        else:
            seen.add(mark)
            report.accepted += 1


@dataclass
class ScrubReport:
    rows: int = 0
    dialable: int = 0
    blocked: int = 0
    rejected: int = 0


def scrub_csv(
    ctx: Context,
    path: Path,
    out_path: Path,
    *,
    column: str | None = None,
    progress: Progress | None = None,
) -> ScrubReport:
    """Copy the rows whose number is dialable (a phone number the ledger does not block)."""
    report = ScrubReport()
    region = ctx.settings.default_region
    with (
        path.open(newline="", encoding="utf-8-sig") as handle,
        out_path.open("w", newline="", encoding="utf-8") as out,
    ):
        counting = _CountingReader(handle)
        dialect = _dialect(handle)
        # The dialable rows go out as they came in (a semicolon list stays one).
        writer = csv.writer(out, dialect, lineterminator="\n")
        table = _table(csv.reader(counting, dialect), column)
        if table is None:
            return report
        if table.header is not None:
            writer.writerow(table.header)
        batch: list[tuple[list[str], str | None]] = []

        def flush() -> None:
            numbers = sorted({e for _, e in batch if e})
            blocked = ctx.store.blocked_among(numbers)
            for row, e164 in batch:
                if e164 is None:
                    report.rejected += 1
                elif e164 in blocked:
                    report.blocked += 1
                else:
                    writer.writerow(row)
                    report.dialable += 1
            batch.clear()
            if progress is not None:
                progress(counting.read)

        for row in table.rows:
            if not row:
                continue
            report.rows += 1
            result = normalise(_cell(row, table.phone_at), region)
            batch.append((row, result.e164 if isinstance(result, Normalised) else None))
            if len(batch) == BATCH:
                flush()
        flush()
    return report
