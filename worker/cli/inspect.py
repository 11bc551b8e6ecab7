"""Commands that look without changing: one number's status, the SLA, the configuration."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.table import Table

from worker.cli.common import (
    console,
    duration,
    err,
    ms_to_text,
    open_context,
    read_settings,
    span,
)

app = typer.Typer()


@app.command()
def status(
    phone: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show one number: desired state, expiry, each provider's status, the audit trail."""
    ctx = open_context()
    from worker.domain.phones import Rejected, normalise
    from worker.ingress.api import number_view

    normal = normalise(phone, ctx.settings.default_region)
    if isinstance(normal, Rejected):
        err.print(f"[red]not a phone number: {normal.reason}[/red]")
        raise typer.Exit(2)
    view = number_view(ctx, normal.e164)
    if as_json:
        typer.echo(json.dumps(view, sort_keys=True))
    if not view["known"]:
        console.print(f"{normal.e164}: no opt-out or opt-in recorded")
        raise typer.Exit(1)
    if as_json:
        return
    console.print(
        f"[bold]{view['phone']}[/bold]  state={view['state']}  version={view['version']}  "
        f"expires={ms_to_text(view['expires_at_ms'])}"
    )
    table = Table("provider", "confirmed", "staged", "in flight", "attempts", "dead letter",
                  "last answer", title="providers")  # fmt: skip
    for target, row in view["providers"].items():
        answer = row["last_answer"] or {}
        table.add_row(
            target,
            row["confirmed"] or "-",
            row["staged"] or "-",
            row["in_flight_chunk"] or "-",
            str(row["attempts"]),
            (row["dead_letter"] or {}).get("reason", "-"),
            f"{answer.get('act', '')} {answer.get('out', '')} {answer.get('rsn', '')}".strip()
            or "-",
        )
    console.print(table)
    audit = Table("time", "event", "what", "result", "detail", title="audit (newest first)")
    for entry in view["audit"]:
        what = entry.get("act", "")
        if entry.get("prov"):
            what = f"{what} -> {entry['prov']}"
        audit.add_row(
            ms_to_text(entry.get("at")),
            str(entry.get("ev", ""))[:12],
            what,
            str(entry.get("res") or entry.get("out") or ""),
            ": ".join(str(entry[k]) for k in ("src", "rsn", "det") if entry.get(k)),
        )
    console.print(audit)


@app.command()
def sla(
    age: Annotated[
        str | None,
        typer.Option(help="Older than this: 24h, 90m, 3600 (default OPTOUT_SLA_SECONDS)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most N.")] = 200,
) -> None:
    """Numbers whose latest state is not yet confirmed on every provider after AGE."""
    ctx = open_context()
    from worker.ops.sla import overdue

    seconds = ctx.settings.sla_seconds if age is None else duration(age)
    late = overdue(ctx, seconds, limit=limit)
    table = Table("phone", "state", "age", "still pending at", title=f"not confirmed after "
                  f"{span(seconds)}: {len(late)}")  # fmt: skip
    for row in late:
        table.add_row(row.phone, row.state, span(row.age_seconds), ", ".join(row.pending))
    console.print(table)
    raise typer.Exit(1 if late else 0)


@app.command("check-config")
def check_config() -> None:
    """Validate the configuration and print it, secrets masked, each value in the syntax its
    variable takes."""
    settings = read_settings()
    table = Table("variable", "value", title="effective configuration")
    for variable, value in settings.variables():
        shown = _show(value, _SEPARATORS.get(variable, ":"))
        if variable == "OPTOUT_ADMIN_TOKEN" and value is None:
            local = settings.data_dir / "admin-token"
            shown = f"- (optout up uses {local})" if local.exists() else "- (admin API off)"
        table.add_row(variable, shown)
    console.print(table)
    enabled = settings.enabled_providers()
    console.print(f"providers enabled: {', '.join(enabled) if enabled else 'none'}")


#: The separator of each `key<sep>value` variable (the others' is ':').
_SEPARATORS = {
    "OPTOUT_ROUTES": "=",
    "OPTOUT_PROVIDER_LIMITS": "=",
    "OPTOUT_VOICENTER_CALL_TYPES": "=",
    "OPTOUT_VOICENTER_OPTOUT_CUSTOMDATA": "=",
    "DAKTELA_FIELDS": "=",
}


def _show(value: Any, sep: str = ":") -> str:
    """A value as its variable would be written, secrets masked ("-": unset or empty)."""
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else "(empty)"
    if isinstance(value, dict):
        return ",".join(_pair(k, v, sep) for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(_show(v) for v in value) or "-"
    if value is None:
        return "-"
    if isinstance(value, str) and "@" in value and "://" in value:
        # A URL with credentials: show the host only.
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return str(value)


def _pair(key: str, value: Any, sep: str) -> str:
    if isinstance(value, dict):  # a route: include and exclude lists
        picks = [*value.get("include", []), *(f"-{p}" for p in value.get("exclude", []))]
        return ",".join(f"{key}{sep}{p}" for p in picks)
    if isinstance(value, tuple):  # a provider's limits
        rps, concurrency = value
        return f"{key}{sep}{rps:g}/{concurrency}"
    if isinstance(value, list) and all(isinstance(v, SecretStr) for v in value):
        return ",".join(f"{key}{sep}{_show(v)}" for v in value)
    if isinstance(value, list):  # call types: field|field
        return f"{key}{sep}{'|'.join(str(v) for v in value)}"
    return f"{key}{sep}{_show(value)}"
