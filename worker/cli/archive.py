"""`optout archive` (migrate, status) and `optout audit export`: the audit archive."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.common import (
    console,
    err,
    fail,
    group,
    open_context,
    progress_bar,
    read_settings,
)
from worker.cli.output import JsonOpt, fields, json_lines, say

if TYPE_CHECKING:
    from worker.pipeline.context import Context

app = group(help="The audit archive: migrations, backlog.", no_args_is_help=True)
audit = group(help="Audit evidence from the archive.", no_args_is_help=True)


@app.command("migrate")
def migrate() -> None:
    """Create or upgrade the archive's tables (OPTOUT_ARCHIVE_URL; default SQLite in the data
    dir). Workers and `optout up` also do it on first use."""
    settings = read_settings()
    from worker.archive.database import Archive, ArchiveError

    archive = Archive(settings.archive_database_url)
    try:
        version = archive.migrate()
    except ArchiveError as exc:
        fail(f"{archive.describe()}: {exc.message}", 1)
    finally:
        archive.close()
    console.print(f"{archive.describe()}: schema at version {version}", highlight=False,
                  markup=False)  # fmt: skip


@app.command("status")
def status(as_json: Annotated[bool, JsonOpt] = False) -> None:
    """What waits in Redis for the archive (entries, the oldest one's age) and the alarm;
    exit 1 while above OPTOUT_AUDIT_BACKLOG_ALARM."""
    ctx = open_context()
    from worker.archive.archiver import backlog_report

    report = {"archive": ctx.archive.describe(), **backlog_report(ctx)}
    if as_json:
        json_lines([report])
    else:
        fields(report, first=("archive", "entries", "oldest_at", "lag_seconds", "alarm"))
    if report["alarm"]:
        say(alarm_text(report))
        raise typer.Exit(1)


def alarm_text(report: dict[str, Any]) -> str:
    """What says the backlog is above the alarm (and whether accepts are refused)."""
    waiting = "1 entry waits" if report["entries"] == 1 else f"{report['entries']} entries wait"
    text = (f"audit archive behind: {waiting} in Redis (alarm above "
            f"{report['alarm_above']}, oldest {report['lag_seconds']:.0f} s ago)")  # fmt: skip
    if report["refusing_accepts"]:
        text += f"; opt-outs refused (503) until below {report['limit']}"
    return text


def _time(option: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {value!r} is not an ISO 8601 time (e.g. 2026-12-01 or "
             "2026-12-01T10:00:00Z)")  # fmt: skip
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@audit.command("export")
def export(
    phone: Annotated[
        str | None, typer.Option(metavar="PHONE", help="One number's entries (national or E.164).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(metavar="TIME", help="Entries at or after (ISO 8601, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="TIME", help="Entries before (ISO 8601, UTC).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="jsonl|csv")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write here (default: stdout).")
    ] = None,
) -> None:
    """Audit entries as an evidence file, oldest first: a number's (--phone), or all of a
    time range (--since/--until), from the archive and what still waits in Redis."""
    from worker.archive.database import ArchiveError
    from worker.archive.export import FORMATS, evidence, render

    if fmt not in FORMATS:
        fail("--format is jsonl or csv")
    if phone is None and since is None:
        fail("say which entries: --phone PHONE, or --since TIME (and --until TIME)")
    since_ms, until_ms = _time("--since", since), _time("--until", until)
    ctx = open_context()
    number = None
    if phone is not None:
        from worker.domain.phones import Rejected, normalise

        normal = normalise(phone, ctx.settings.default_region)
        if isinstance(normal, Rejected):
            fail(f"{phone!r} is not a phone number: {normal.reason}")
        number = normal.e164
    out = output.open("w", newline="") if output else sys.stdout
    written = 0

    def counted(entries: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal written
        for entry in entries:
            written += 1
            yield entry

    try:
        entries = evidence(ctx, number, since_ms, until_ms)
        if output is not None and err.is_terminal:
            entries = _with_progress(ctx, entries, number, since_ms, until_ms)
        for chunk in render(fmt)(counted(entries)):
            out.write(chunk)
    except ArchiveError as exc:
        fail(f"export stopped: {exc.message}", 1)
    finally:
        if output is not None:
            out.close()
    noun = "entry" if written == 1 else "entries"
    where = f" to {output}" if output else ""
    # Beside the file on stdout; in a pipe of the entries themselves, on stderr.
    (err if output is None else console).print(f"exported {written} {noun}{where}",
                                               highlight=False, markup=False)  # fmt: skip


def _with_progress(
    ctx: Context, entries: Iterator[dict[str, Any]], number: str | None,
    since_ms: int | None, until_ms: int | None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """A progress bar on stderr over the archived entries (a terminal only)."""
    total = ctx.archive.count(since_ms, until_ms, number) if ctx.archive.ready() else None
    with progress_bar() as progress:
        task = progress.add_task("exporting", total=total)
        for entry in entries:
            yield entry
            progress.advance(task)
