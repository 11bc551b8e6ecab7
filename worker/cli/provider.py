"""`optout provider` (list, test, resume) and `optout reconcile`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli.common import (
    console,
    err,
    group,
    open_context,
    who,
)
from worker.cli.output import JsonOpt, columns, listing, say

if TYPE_CHECKING:
    from worker.pipeline.context import Context
    from worker.providers.base import Provider

app = group(help="Provider status, probes and resume.", no_args_is_help=True)
#: Top-level commands of this group (`optout reconcile`).
commands = group()


NameArg = Annotated[
    str, typer.Argument(metavar="PROVIDER", help="A provider: voicenter, phonely...")
]


@app.command("list")
def provider_list(as_json: Annotated[bool, JsonOpt] = False) -> None:
    """Each provider target: active, paused or holding; staged, in flight, retrying and
    dead-lettered numbers."""
    ctx = open_context()
    paused = ctx.store.paused()
    targets = ctx.targets()
    counts = ctx.store.counts(sorted(targets))
    retrying = ctx.store.retry_counts()
    dead_by_target = ctx.store.dead_letter_counts()
    circuits = ctx.store.open_circuits(set(targets.values()))
    records = []
    for target in sorted(targets):
        provider = targets[target]
        state = "paused: " + paused[provider]["reason"] if provider in paused else "active"
        held = ctx.store.held_for(provider)
        if not paused.get(provider) and provider in circuits:
            state = f"circuit open, next probe in {held:.0f}s" if held else "circuit probing"
        elif not paused.get(provider) and held:
            state = f"holding {held:.0f}s (Retry-After)"
        c = counts[target]
        records.append({
            "target": target, "provider": provider, "state": state,
            "staged_add": c["staged_add"], "staged_remove": c["staged_remove"],
            "in_flight": c["in_flight"], "retrying": retrying.get(target, 0),
            "dead_letters": dead_by_target.get(target, 0),
        })  # fmt: skip
    cols = columns("target", "provider", "state", "staged_add", "staged_remove", "in_flight",
                   "retrying", "dead_letters")  # fmt: skip
    listing(None, cols, records, as_json)
    if as_json:
        return
    say(f"dead letters: {sum(dead_by_target.values())}")
    for provider, info in paused.items():
        say(f"{provider} paused: {info['reason']}; fix {info['setting']}, "
            f"then: optout provider resume {provider}")  # fmt: skip


def _provider(ctx: Context, name: str) -> Provider:
    provider = ctx.providers.get(name)
    if provider is None:
        err.print(
            f"[red]{name} is not enabled[/red] (enabled: {', '.join(ctx.providers) or 'none'})"
        )
        raise typer.Exit(2)
    return provider


@app.command("test")
def provider_test(name: NameArg) -> None:
    """Probe a provider's credentials with a call that changes nothing."""
    ctx = open_context()
    from worker.providers.errors import AuthError, ProviderError

    try:
        _provider(ctx, name).probe()
    except AuthError as exc:
        err.print(f"[red]{name}: credentials refused ({exc.reason}); fix {exc.setting}[/red]")
        raise typer.Exit(1) from None
    except ProviderError as exc:
        err.print(f"[red]{name}: probe failed: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{name}: ok")


@app.command("resume")
def provider_resume(name: NameArg) -> None:
    """Probe a paused provider and, if it answers, resume it and push what is staged."""
    provider_test(name)
    ctx = open_context()
    from worker.pipeline.batching import ALL
    from worker.providers.base import Action

    was_paused = ctx.store.resume(name)
    for target in _provider(ctx, name).targets():
        for action in Action:
            ctx.dispatcher.flush(target, action, ALL)
    console.print(
        f"{name}: {'resumed' if was_paused else 'was not paused'}; staged numbers flushing"
    )


@commands.command("reconcile")
def reconcile_cmd(
    provider: Annotated[
        str | None, typer.Argument(metavar="PROVIDER", help="One provider (default: all).")
    ] = None,
    remove_extras: Annotated[
        bool, typer.Option(help="Remove numbers a provider holds that the ledger does not block.")
    ] = False,
    as_json: Annotated[bool, JsonOpt] = False,
) -> None:
    """Compare each provider's list with the ledger (Phonely, VoodooSMS, Daktela): re-push
    what is missing, report what is extra."""
    ctx = open_context()
    from worker.ops.reconcile import reconcile
    from worker.providers.errors import ProviderError

    if provider and provider not in ctx.providers:
        err.print(f"[red]{provider} is not enabled[/red]")
        raise typer.Exit(2)
    with console.status("listing provider blacklists ..."):
        try:
            reports = reconcile(ctx, provider, remove_extras, who=who())
        except ProviderError as exc:
            err.print(f"[red]reconcile stopped: {exc}[/red]")
            raise typer.Exit(1) from None
    for r in reports:
        for n in r.extras[:20]:
            say(f"extra at {r.target}: {n}")
    if not reports:
        say("no enabled provider can list its blacklist (Phonely, VoodooSMS, Daktela can)")
        return
    records = [
        {"target": r.target, "provider_holds": r.listed, "ledger_blocks": r.blocked,
         "missing_repushed": len(r.missing), "extra": len(r.extras), "extra_removing": r.removing}
        for r in reports
    ]  # fmt: skip
    cols = columns(*records[0])
    listing("reconciliation", cols, records, as_json)
