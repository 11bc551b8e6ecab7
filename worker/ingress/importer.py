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
from typing import IO

from worker.domain.phones import Normalised, normalise
from worker.pipeline.accept import AcceptError, Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

BATCH = 1000
Progress = Callable[[int], None]  # bytes read so far


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    repeated_batches: int = 0  # batches already imported (a re-run)


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


def _table(rows: Iterator[list[str]], column: str | None) -> _Table | None:
    """The table of a CSV (None when it is empty): the phone is the column named `column`
    (default `phone`) in a header row, else the first column of a file without a header;
    naming a column the header lacks is an error, not a guess."""
    first = next(rows, None)
    if first is None:
        return None
    lowered = [c.strip().lower() for c in first]
    wanted = (column or "phone").lower()
    if wanted in lowered:
        name_at = lowered.index("name") if "name" in lowered else None
        return _Table(first, lowered.index(wanted), name_at, rows)
    if column:
        raise ValueError(f"no column named {column!r} in the header {first!r}")
    return _Table(None, 0, None, _chain(first, rows))


def _rows(reader: _CountingReader, column: str | None) -> Iterator[tuple[int, str, str]]:
    """(line number, phone cell, name cell) for every data row."""
    table = _table(csv.reader(reader), column)
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


def _batches(
    rows: Iterator[tuple[int, str, str]], size: int
) -> Iterator[list[tuple[int, str, str]]]:
    batch: list[tuple[int, str, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    with (
        path.open(newline="", encoding="utf-8-sig") as handle,
        report_path.open("w", newline="", encoding="utf-8") as out,
    ):
        writer = csv.writer(out)
        writer.writerow(["line", "input", "reason"])
        counting = _CountingReader(handle)
        for batch in _batches(_rows(counting, column), BATCH):
            report.rows += len(batch)
            digest = hashlib.sha256(
                "\n".join(f"{p}\t{n}" for _, p, n in batch).encode()
            ).hexdigest()
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
                    writer.writerow([line, phone, why])
                report.rejected += len(batch)
            else:
                report.repeated_batches += int(result.duplicate)
                for (line, phone, _), outcome in zip(batch, result.phones, strict=True):
                    if outcome.status == "rejected":
                        writer.writerow([line, phone, outcome.reason])
                        report.rejected += 1
                    else:
                        report.accepted += 1
            if progress is not None:
                progress(counting.read)
    return report


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
        writer = csv.writer(out)
        table = _table(csv.reader(counting), column)
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
