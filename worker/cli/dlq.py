"""`optout dlq`: list, show, purge and replay dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.common import (
    console,
    count_of,
    err,
    group,
    in_batches,
    open_context,
    who,
)
from worker.cli.output import Col, JsonOpt, iso, json_lines, table
from worker.ops.deadletters import DeadLetterFilter

if TYPE_CHECKING:
    from worker.pipeline.context import Context

app = group(help="Inspect and replay dead letters.", no_args_is_help=True)


def _dead_letter_filter(
    provider: str | None,
    action: str | None,
    reason: str | None,
    phone: str | None,
    older_than: float | None,
    ids: list[str] | None,
) -> DeadLetterFilter:
    return DeadLetterFilter(provider, action, reason, phone, older_than, tuple(ids or ()))


ProviderOpt = Annotated[
    str | None, typer.Option(metavar="TARGET", help="Only this provider (or target).")
]
ActionOpt = Annotated[str | None, typer.Option(metavar="add|remove", help="Only add or remove.")]
ReasonOpt = Annotated[
    str | None, typer.Option(metavar="TEXT", help="Only reasons containing this.")
]
PhoneOpt = Annotated[str | None, typer.Option(metavar="NUMBER", help="Only this E.164 number.")]
OlderOpt = Annotated[
    float | None, typer.Option(metavar="SECONDS", help="Only entries older than N seconds.")
]


@app.command("list")
def dlq_list(
    provider: ProviderOpt = None,
    action: ActionOpt = None,
    reason: ReasonOpt = None,
    phone: PhoneOpt = None,
    older_than: OlderOpt = None,
    limit: Annotated[int, typer.Option(metavar="N", help="Show at most N.")] = 100,
    offset: Annotated[int, typer.Option(metavar="N", help="Skip the first N (paging).")] = 0,
    as_json: Annotated[bool, JsonOpt] = False,
) -> None:
    """List dead letters, oldest first."""
    ctx = open_context()
    from worker.ops.deadletters import select

    flt = _dead_letter_filter(provider, action, reason, phone, older_than, None)
    entries = select(ctx.store.dead_letters(), _in_e164(flt, ctx), ctx.store.now_ms())
    total = len(entries)
    entries = entries[offset:]
    if as_json:
        json_lines(entries[:limit])
        return
    shown = entries[:limit]
    title = f"dead letters: {total}"
    if len(shown) < total:
        title += f" (showing {offset + 1}-{offset + len(shown)}; --offset, --limit)"
    table(
        title,
        [Col("id", whole=True), Col("action"), Col("reason"), Col("attempts"), Col("last"),
         Col("last error")],
        [
            (e["id"], e.get("action"), e.get("reason"), e.get("attempts"),
             iso(e.get("last_at")), e.get("last_error"))
            for e in shown
        ],
    )  # fmt: skip


@app.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="As dlq list shows it.")],
) -> None:
    """One dead letter in full, with the number's audit trail."""
    ctx = open_context()
    entry = next((e for e in ctx.store.dead_letters() if e["id"] == entry_id), None)
    if entry is None:
        err.print(f"[red]no dead letter {entry_id}[/red] (ids look like voicenter|+972501234567)")
        raise typer.Exit(1)
    typer.echo(json.dumps(entry, indent=2, sort_keys=True))
    typer.echo(json.dumps(ctx.store.audit(entry["phone"], limit=20), indent=2))


IdsOpt = Annotated[
    list[str] | None, typer.Option("--id", metavar="ID", help="Entry id (repeatable).")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every entry the filters match.")]
DryRunOpt = Annotated[bool, typer.Option(help="Show what would be done, and do nothing.")]


def _bulk(verb: str, run: Callable[[Context, list[str]], None]) -> Callable[..., None]:
    """A command that applies `run` to the dead letters an operator chose by id, filters or
    --all (refusing to guess when nothing was said), or with --dry-run shows them."""

    def command(
        ids: IdsOpt = None,
        all_: AllOpt = False,
        provider: ProviderOpt = None,
        action: ActionOpt = None,
        reason: ReasonOpt = None,
        phone: PhoneOpt = None,
        older_than: OlderOpt = None,
        dry_run: DryRunOpt = False,
    ) -> None:
        flt = _dead_letter_filter(provider, action, reason, phone, older_than, ids)
        chosen = _chosen(verb, all_, flt, dry_run)
        if chosen is not None:
            run(chosen[1], chosen[0])

    return command


def _purge(ctx: Context, ids: list[str]) -> None:
    """Drop dead letters (giving up on them at that provider); each purge is audited."""
    done = in_batches(ids, lambda batch: int(ctx.store.purge(batch, who())), "purging")
    console.print(f"purged {count_of(done, 'dead letter')}")


def _replay(ctx: Context, ids: list[str]) -> None:
    """Put dead letters back into their batches; each leaves the store once delivered."""
    from worker.pipeline.batching import replay

    done = in_batches(ids, lambda batch: replay(ctx, batch, who()), "replaying")
    console.print(f"replayed {count_of(done, 'dead letter')}")
    if done < len(ids):
        console.print(
            f"{len(ids) - done} not replayed: gone meanwhile, or their target is not live "
            "(no process has it): replay them again once it is back, or purge them if it is "
            "gone for good"
        )


app.command("purge", help=_purge.__doc__)(_bulk("purge", _purge))
app.command("replay", help=_replay.__doc__)(_bulk("replay", _replay))


def _chosen(
    verb: str, all_: bool, flt: DeadLetterFilter, dry_run: bool
) -> tuple[list[str], Context] | None:
    """The dead-letter ids an operator chose and the pipeline, refusing to guess when nothing
    was said; None after a dry run has shown them."""
    if flt.empty() and not all_:
        err.print(f"[red]say what to {verb}: --id, filters, or --all[/red]")
        raise typer.Exit(2)
    ctx = open_context()
    from worker.ops.deadletters import select

    flt = _in_e164(flt, ctx)
    ids = [e["id"] for e in select(ctx.store.dead_letters(), flt, ctx.store.now_ms())]
    if not dry_run:
        return ids, ctx
    console.print(f"would {verb} {count_of(len(ids), 'dead letter')}")
    for entry_id in ids[:50]:
        console.print(f"  {entry_id}")
    return None


def _in_e164(flt: DeadLetterFilter, ctx: Context) -> DeadLetterFilter:
    """The filter with its phone in E.164 (dead letters are kept by it): `--phone
    0561111111` means the national number; a phone that is not one is refused."""
    if not flt.phone:
        return flt
    from worker.domain.phones import Rejected, normalise

    normal = normalise(flt.phone, ctx.settings.default_region)
    if isinstance(normal, Rejected):
        err.print(f"[red]--phone {flt.phone!r} is not a phone number: {normal.reason}[/red]")
        raise typer.Exit(2)
    return replace(flt, phone=normal.e164)
