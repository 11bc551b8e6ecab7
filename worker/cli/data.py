"""Commands over CSV files: import opt-outs, scrub a dial list."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import (
    Bars,
    console,
    count_of,
    err,
    group,
    open_context,
    progress_over,
)

app = group()


@app.command("import")
def import_cmd(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False, readable=True)
    ],
    action: Annotated[
        str, typer.Option(metavar="add|remove", help="add (opt-out) or remove (opt-in).")
    ] = "add",
    source: Annotated[
        str, typer.Option(metavar="NAME", help="Source recorded on every row.")
    ] = "import",
    as_of: Annotated[
        str | None,
        typer.Option(
            metavar="TIME", help="When the list was true (ISO 8601). Required for remove."
        ),
    ] = None,
    column: Annotated[
        str | None, typer.Option(metavar="NAME", help="Phone column (default: phone).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Rejected rows go here (default FILE.rejected.csv), if there are any.",
        ),
    ] = None,
) -> None:
    """Import a CSV of numbers, streamed; rejected rows and reasons go to a report file.
    Safe to run twice: each batch is idempotent."""
    from worker.ingress.importer import ColumnError, import_csv
    from worker.pipeline.accept import AcceptError
    from worker.providers.base import Action

    if action not in ("add", "remove"):
        err.print("[red]--action is add or remove[/red]")
        raise typer.Exit(2)
    when = None
    if as_of:
        try:
            when = dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            err.print(f"[red]--as-of {as_of!r} is not an ISO 8601 time[/red]")
            raise typer.Exit(2) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    if action == "remove" and when is None:
        err.print("[red]a remove import needs --as-of TIME[/red] (when the list was exported:"
                  " opt-outs made after it must not be undone)")  # fmt: skip
        raise typer.Exit(2)
    ctx = open_context()
    report_path = report or file.with_suffix(".rejected.csv")
    progress, advance = progress_over(file, "importing")
    try:
        with progress:
            result = import_csv(
                ctx,
                file,
                action=Action(action),
                source=source,
                as_of=when,
                report_path=report_path,
                column=column,
                progress=advance,
            )
    except ColumnError as exc:
        err.print(f"[red]--column: {exc}[/red]")
        raise typer.Exit(2) from None
    except (AcceptError, ValueError) as exc:
        err.print(f"[red]import stopped: {getattr(exc, 'message', exc)}[/red] (re-run to resume)")
        raise typer.Exit(1) from None
    where = f" (see {report_path})" if result.report_written else ""
    console.print(
        f"rows {result.rows}: accepted {result.accepted}, duplicates {result.duplicates}, "
        f"rejected {result.rejected}{where}, already imported batches {result.repeated_batches}"
    )
    if result.rows == 0:
        err.print(f"[red]{file} has no data rows[/red]")
        raise typer.Exit(1)
    if result.accepted == 0 and result.duplicates == 0:
        err.print(f"[red]nothing accepted: every row was rejected[/red] (reasons in {report_path})")
        raise typer.Exit(1)


@app.command()
def scrub(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False, readable=True)
    ],
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Default FILE.dialable.csv.")
    ] = None,
    column: Annotated[
        str | None, typer.Option(metavar="NAME", help="Phone column (default: phone).")
    ] = None,
) -> None:
    """Write the dialable rows of a campaign list: numbers the ledger does not block."""
    from worker.ingress.importer import scrub_csv

    ctx = open_context()
    out_path = out or file.with_name(file.stem + ".dialable.csv")
    progress, advance = progress_over(file, "scrubbing")
    try:
        with progress:
            result = scrub_csv(ctx, file, out_path, column=column, progress=advance)
    except ValueError as exc:
        err.print(f"[red]--column: {exc}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"rows {result.rows}: dialable {result.dialable} (written to {out_path}), "
        f"blocked {result.blocked}, not a phone number {result.rejected}"
    )


@app.command()
def export(
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write here (default: standard output).")
    ] = None,
) -> None:
    """Every blocked number as CSV (phone,expires_at_ms,updated_ms), streamed: what
    GET /v1/export answers."""
    from worker.ops.export import blocked_csv

    ctx = open_context()
    # A bar on stderr while the list goes to a file or a pipe; none over it in a terminal.
    with Bars(show=out is not None or not sys.stdout.isatty()) as bars:
        if out is None:
            for text in blocked_csv(ctx, progress=bars):
                sys.stdout.write(text)
            sys.stdout.flush()
            return
        lines = 0
        with out.open("w", encoding="utf-8", newline="") as handle:
            for text in blocked_csv(ctx, progress=bars):
                handle.write(text)
                lines += text.count("\n")
    console.print(f"exported {count_of(lines - 1, 'blocked number')} to {out}")
