"""`optout dlq`: list, show, purge and replay dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
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
from worker.cli.inspect import audit_table
from worker.cli.output import JsonOpt, columns, fields, json_lines, table
from worker.ops.deadletters import ChoiceError, DeadLetterFilter, external_id, internal_id
from worker.ops.views import dead_letter, words

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
PhoneOpt = Annotated[
    str | None, typer.Option(metavar="NUMBER", help="Only this number (national or E.164).")
]
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
    entries = select(ctx.store.dead_letters(), _in_store_terms(flt, ctx), ctx.store.now_ms())
    total = len(entries)
    shown = [dead_letter(e) for e in entries[offset : offset + limit]]
    if as_json:
        json_lines(shown)
        return
    title = f"dead letters: {total}"
    if len(shown) < total:
        title += f" (showing {offset + 1}-{offset + len(shown)}; --offset, --limit)"
    # One line an entry in 80 columns: the times are in dlq show and --json.
    table(
        title,
        columns("id", "action", "reason", "attempts", "last_error"),
        [(e["id"], e.get("action"), e.get("reason"), e.get("attempts"), e.get("last_error"))
         for e in shown],
    )  # fmt: skip


@app.command("show")
def dlq_show(
    entry_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="As dlq list shows it: TARGET:NUMBER (voicenter:+972501234567)."
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: dead_letter and audit.")
    ] = False,
) -> None:
    """One dead letter in full, with the number's audit trail."""
    ctx = open_context()
    member = _member(entry_id, ctx)
    entry = next((e for e in ctx.store.dead_letters() if e["id"] == member), None)
    if entry is None:
        err.print(
            f"no dead letter {external_id(member)} (optout dlq list shows them)", highlight=False
        )
        raise typer.Exit(1)
    shown = dead_letter(entry)
    audit = [words(a) for a in ctx.store.audit(entry["phone"], limit=20)]
    if as_json:
        typer.echo(json.dumps({"dead_letter": shown, "audit": audit}, sort_keys=True))
        return
    fields(shown, first=_SHOW_FIRST)
    audit_table(audit, after=True)


#: `dlq show`'s order: what it is, why, since when; then the rest as stored.
_SHOW_FIRST = (
    "id", "target", "provider", "phone", "action", "reason", "last_error", "attempts",
    "first_at", "last_at", "version", "events", "replays", "replayed_at",
)  # fmt: skip


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

    flt = _in_store_terms(flt, ctx)
    ids = [e["id"] for e in select(ctx.store.dead_letters(), flt, ctx.store.now_ms())]
    if not dry_run:
        return ids, ctx
    console.print(f"would {verb} {count_of(len(ids), 'dead letter')}")
    for entry_id in ids[:50]:
        console.print(f"  {external_id(entry_id)}", highlight=False)
    return None


def _in_store_terms(flt: DeadLetterFilter, ctx: Context) -> DeadLetterFilter:
    """The filter as the store keeps dead letters (ids as its members, the phone in E.164:
    `--phone 0561111111` means the national number); exit 2 on an id or a phone that names
    none."""
    try:
        return flt.in_store_terms(ctx.settings.default_region)
    except ChoiceError as exc:
        err.print(f"[red]{exc.message}[/red]", highlight=False)
        raise typer.Exit(2) from None


def _member(entry_id: str, ctx: Context) -> str:
    """The store's member for an id as given (exit 2 when it is not one)."""
    try:
        return internal_id(entry_id, ctx.settings.default_region)
    except ChoiceError as exc:
        err.print(f"[red]{exc.message}[/red]", highlight=False)
        raise typer.Exit(2) from None
