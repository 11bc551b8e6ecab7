"""Listings for a person, a pipe and a script: a table, tab-separated lines, JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich import box
from rich.table import Table

from worker.cli.common import console, err

#: The flag every listing takes.
JsonOpt = typer.Option("--json", help="JSON: one object per line (JSON Lines).")


@dataclass(frozen=True)
class Col:
    """A column. `whole`: an id, a number or a target, which a terminal never folds or cuts;
    the other columns fold within their cell when the window is narrow."""

    header: str
    whole: bool = False


def columns(*headers: str, whole: int = 1) -> list[Col]:
    """Columns by header, the first `whole` of them kept whole (the id, number or target)."""
    return [Col(h, whole=i < whole) for i, h in enumerate(headers)]


def cell(value: Any) -> str:
    """A value as a table shows it: "-" for nothing, yes or no, lists comma-joined."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


#: A column whose every value is at most this long is never wrapped: short words (add,
#: bad_format, a count, a time) are read whole, free text wraps beside them.
_SHORT = 20
_FREE = 16


def table(
    title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[Any]], after: bool = False
) -> None:
    """Rows on stdout: on a terminal a table that keeps whole values whole; in a pipe one
    tab-separated line a row under a header line, the title on stderr (so a script reads
    rows only). `after`: this table follows other output on stdout, a blank line between
    (in a pipe, where one table's rows end)."""
    texts = [[cell(v).replace("\t", " ").replace("\n", " ") for v in row] for row in rows]
    if after:
        typer.echo("")
    if not console.is_terminal:
        if title:
            err.print(title, highlight=False, markup=False)
        typer.echo("\t".join(c.header for c in cols))
        for row in texts:
            typer.echo("\t".join(row))
        return
    if not texts:
        # A title with a count ("dead letters: 0") says it already; a bare one gets "none".
        if title:
            console.print(title if ":" in title else f"{title}: none", highlight=False,
                          markup=False)  # fmt: skip
        return
    widths = [max([len(c.header), *(len(row[i]) for row in texts)]) for i, c in enumerate(cols)]
    fixed = [c.whole or w <= _SHORT for c, w in zip(cols, widths, strict=True)]
    # Two spaces between columns; free text needs room for a few words a line.
    needed = sum(w if f else _FREE for w, f in zip(widths, fixed, strict=True)) + 2 * len(cols)
    if needed > console.width:
        _blocks(title, cols, texts)
        return
    # Two spaces between columns and none at the edges: the widths counted above.
    grid = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False,
                 pad_edge=False, padding=(0, 1, 0, 0))  # fmt: skip
    for col, width, whole in zip(cols, widths, fixed, strict=True):
        if whole:
            grid.add_column(col.header, no_wrap=True, min_width=width)
        else:  # free text takes what is left, wrapped at words
            grid.add_column(col.header, overflow="fold", ratio=1)
    for row in texts:
        grid.add_row(*row)
    console.print(grid, highlight=False, markup=False)


def _blocks(title: str | None, cols: Sequence[Col], texts: list[list[str]]) -> None:
    """Rows too wide for the window, one block each: the first value on its own line, then
    `header  value` lines, so nothing is cut or folded mid-word."""
    if title:
        console.print(title, highlight=False, markup=False)
    pad = max(len(c.header) for c in cols[1:]) if len(cols) > 1 else 0
    for row in texts:
        console.print()
        console.print(row[0], highlight=False, markup=False, style="bold")
        for col, value in zip(cols[1:], row[1:], strict=True):
            console.print(f"  {col.header:<{pad}}  {value}", highlight=False, markup=False)


def listing(
    title: str | None, cols: Sequence[Col], records: Sequence[Mapping[str, Any]], as_json: bool
) -> None:
    """Records as JSON Lines, or as a table whose headers are their keys."""
    if as_json:
        json_lines(records)
    else:
        table(title, cols, [[r.get(c.header) for c in cols] for r in records])


def json_lines(records: Sequence[Mapping[str, Any]]) -> None:
    """One JSON object a line, keys sorted."""
    for record in records:
        typer.echo(json.dumps(record, sort_keys=True))


def say(text: str) -> None:
    """A summary line: on stdout for a person, on stderr in a pipe (stdout holds rows)."""
    (console if console.is_terminal else err).print(text, highlight=False, markup=False)


def fields(record: Mapping[str, Any], first: Sequence[str] = ()) -> None:
    """One record as `key  value` lines on stdout (the keys in `first` first, then the rest
    as they come): whole values, read by a person and by grep alike."""
    keys = [k for k in first if k in record] + [k for k in record if k not in first]
    pad = max((len(k) for k in keys), default=0)
    for key in keys:
        value = record[key]
        shown = json.dumps(value, sort_keys=True) if isinstance(value, Mapping) else cell(value)
        shown = shown.replace("\n", " ")
        typer.echo(f"{key:<{pad}}  {shown}")
