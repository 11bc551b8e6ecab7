"""Commands that look without changing: one number's status, the SLA, the configuration."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr

from worker.cli.common import (
    Bars,
    duration,
    err,
    fail,
    group,
    open_context,
    read_settings,
    span,
)
from worker.cli.output import JsonOpt, columns, listing, say, table

if TYPE_CHECKING:
    from worker.pipeline.context import Context

app = group()


@app.command()
def status(
    phone: Annotated[str, typer.Argument(metavar="PHONE", help="The number, national or E.164.")],
    as_json: Annotated[bool, typer.Option("--json", help="The record as one JSON object.")] = False,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=1000, help="Audit entries to show.")
    ] = 50,
    before: Annotated[
        str | None,
        typer.Option(
            metavar="CURSOR",
            help="Older audit entries: the cursor the page before printed, or an ISO time.",
        ),
    ] = None,
) -> None:
    """Show one number: desired state, expiry, each provider's status, its audit history
    newest first (from the archive and Redis, a page of --limit entries)."""
    ctx = open_context()
    from worker.archive.history import CursorError
    from worker.domain.phones import Rejected, normalise
    from worker.ops.views import number_view

    normal = normalise(phone, ctx.settings.default_region)
    if isinstance(normal, Rejected):
        err.print(f"[red]{phone!r} is not a phone number: {normal.reason}[/red]")
        raise typer.Exit(2)
    try:
        view = number_view(ctx, normal.e164, limit, before)
    except CursorError as exc:
        fail(exc.message)
    _say_backlog_alarm(ctx)
    if as_json:
        typer.echo(json.dumps(view, sort_keys=True))
    if not view["known"]:
        err.print(f"{normal.e164}: no opt-out or opt-in recorded", highlight=False)
        raise typer.Exit(1)
    if as_json:
        return
    say(
        f"{view['phone']}  state={view['state']}  version={view['version']}  "
        f"expires={view['expires_at'] or '-'}"
    )
    rows = []
    for target, row in view["providers"].items():
        answer = row["last_answer"] or {}
        rows.append((
            target, row["confirmed"], row["staged"], row["in_flight_chunk"], row["attempts"],
            row["retry_at"], (row["dead_letter"] or {}).get("reason"),
            " ".join(str(answer[k]) for k in ("action", "outcome", "reason") if answer.get(k)),
        ))  # fmt: skip
    table("providers", columns("target", "confirmed", "staged", "in_flight", "attempts",
          "retry_at", "dead_letter", "last_answer"), rows)  # fmt: skip
    audit_table(view["audit"], after=True)
    if view["archive"] != "ok":
        say(f"archive: {view['archive']} (older entries may be missing)")
    if view["audit_next"]:
        say(f"older entries: optout status {view['phone']} --before {view['audit_next']}")


def _say_backlog_alarm(ctx: Context) -> None:
    """On stderr, when the audit archive is behind beyond the alarm."""
    from worker.archive.archiver import backlog_report
    from worker.cli.archive import alarm_text

    report = backlog_report(ctx)
    if report["alarm"]:
        err.print(alarm_text(report), style="red", highlight=False, markup=False)


def audit_table(entries: list[dict[str, Any]], after: bool = False) -> None:
    """A number's audit trail as shown (worker/ops/views.py: words), newest first."""
    rows = []
    for entry in entries:
        what = entry.get("action", "")
        if entry.get("target"):
            what = f"{what} -> {entry['target']}"
        rows.append((
            entry.get("at"), str(entry.get("event_id", ""))[:12], what,
            entry.get("result") or entry.get("outcome"),
            ": ".join(str(entry[k]) for k in ("source", "by", "reason", "detail")
                      if entry.get(k)),
        ))  # fmt: skip
    table("audit (newest first)", columns("time", "event", "what", "result", "detail"), rows,
          after)  # fmt: skip


@app.command()
def sla(
    age: Annotated[
        str | None,
        typer.Option(
            metavar="AGE", help="Older than this: 24h, 90m, 3600 (default OPTOUT_SLA_SECONDS)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="Show at most N.")] = 200,
    as_json: Annotated[bool, JsonOpt] = False,
) -> None:
    """Numbers whose latest state is not yet confirmed on every provider after AGE."""
    ctx = open_context()
    from worker.ops.sla import overdue

    seconds = ctx.settings.sla_seconds if age is None else duration(age)
    with Bars() as bars:
        late = overdue(ctx, seconds, limit=limit, progress=bars)
    records = [
        {"phone": r.phone, "state": r.state, "age": span(r.age_seconds),
         "age_seconds": round(r.age_seconds), "pending": r.pending}
        for r in late
    ]  # fmt: skip
    title = f"not confirmed after {span(seconds)}: {len(late)}"
    if len(late) >= limit:
        title += f" (the first {limit} found; --limit N for more)"
    listing(title, columns("phone", "state", "age", "pending"), records, as_json)
    raise typer.Exit(1 if late else 0)


@app.command("check-config")
def check_config(as_json: Annotated[bool, JsonOpt] = False) -> None:
    """Validate the configuration and print it, secrets masked, each value in the syntax its
    variable takes; with Sentinel, the Redis primary the Sentinels name now."""
    settings = read_settings()
    records = []
    for variable, value in settings.variables():
        shown = _show(value, _SEPARATORS.get(variable, ":"))
        if variable == "OPTOUT_ADMIN_TOKEN" and value is None:
            local = settings.data_dir / "admin-token"
            shown = f"- (optout up uses {local})" if local.exists() else "- (admin API off)"
        elif variable == "OPTOUT_ARCHIVE_URL":
            from worker.archive.database import describe

            shown = describe(settings.archive_database_url)
            shown = shown if value else f"- ({shown})"
        records.append({"variable": variable, "value": shown})
    listing("effective configuration", columns("variable", "value"), records, as_json)
    if not as_json:
        enabled = settings.enabled_providers()
        say(f"providers enabled: {', '.join(enabled) if enabled else 'none'}")
    if settings.redis_sentinels:
        from worker.runtime.redis_clients import primary_or_reason, redis_client

        # Asked, not assumed: which node takes writes now, as the Sentinels say.
        say(f"Redis primary: {primary_or_reason(redis_client(settings))} (Sentinel master "
            f"{settings.redis_sentinel_master})")  # fmt: skip


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
