"""`optout provider` (list, test, resume) and `optout reconcile`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.common import Bars, console, err, fail, group, open_context, who
from worker.cli.output import JsonOpt, columns, json_lines, listing, say, table

if TYPE_CHECKING:
    from worker.pipeline.context import Context, DeploymentTarget
    from worker.providers.base import Provider

app = group(help="Provider status, probes and resume.", no_args_is_help=True)
#: Top-level commands of this group (`optout reconcile`).
commands = group()


NameArg = Annotated[
    str, typer.Argument(metavar="PROVIDER", help="A provider: voicenter, phonely...")
]

LIST_COLUMNS = columns(
    "target", "provider", "live", "state", "staged_add", "staged_remove", "in_flight",
    "retrying", "dead_letters", "catch_up", "credentials_here",
)  # fmt: skip


def credential_variables(name: str) -> str:
    """The variables that give a process this provider, as an operator types them."""
    from worker.providers import SETTINGS

    return ", ".join(SETTINGS[name].credential_variables())


def live_providers(deployment: dict[str, DeploymentTarget]) -> list[str]:
    """The providers the deployment pushes to: some running process announces a target."""
    return sorted({d.provider for d in deployment.values() if d.live})


@app.command("list")
def provider_list(as_json: Annotated[bool, JsonOpt] = False) -> None:
    """Each target of the deployment, as the running processes announced it in Redis (live
    or not), whatever this terminal's own settings: active, paused or holding; staged, in
    flight, retrying and dead-lettered numbers; whether this process has its credentials."""
    ctx = open_context()
    from worker.pipeline.batching import catch_ups

    deployment = ctx.deployment()
    catching_up = catch_ups(ctx)
    paused = ctx.store.paused()
    counts = ctx.store.counts(list(deployment))
    retrying = ctx.store.retry_counts()
    dead_by_target = ctx.store.dead_letter_counts()
    circuits = ctx.store.open_circuits({d.provider for d in deployment.values()})
    records = []
    for target, seen in deployment.items():
        provider = seen.provider
        state = "paused: " + paused[provider]["reason"] if provider in paused else "active"
        held = ctx.store.held_for(provider)
        if not paused.get(provider) and provider in circuits:
            state = f"circuit open, next probe in {held:.0f}s" if held else "circuit probing"
        elif not paused.get(provider) and held:
            state = f"holding {held:.0f}s (Retry-After)"
        c = counts[target]
        records.append({
            "target": target, "provider": provider, "live": seen.live, "state": state,
            "staged_add": c["staged_add"], "staged_remove": c["staged_remove"],
            "in_flight": c["in_flight"], "retrying": retrying.get(target, 0),
            "dead_letters": dead_by_target.get(target, 0), "catch_up": catching_up.get(target),
            "credentials_here": seen.here,
        })  # fmt: skip
    if as_json:
        json_lines(records)
        return
    table(None, LIST_COLUMNS, [[_cell(r[c.header]) for c in LIST_COLUMNS] for r in records])
    if not deployment:
        say("no target announced: no worker has run with a provider's credentials")
    say(f"dead letters: {sum(dead_by_target.values())}")
    for target, at in catching_up.items():
        say(catch_up_text(target, at))
    for provider, info in paused.items():
        say(f"{provider} paused: {info['reason']}; fix {info['setting']}, "
            f"then: optout provider resume {provider}")  # fmt: skip
    if lapsed := [t for t, d in deployment.items() if not d.live]:
        say(f"not live (no running process announces it; nothing is pushed there): "
            f"{', '.join(lapsed)}")  # fmt: skip
    for provider in sorted({d.provider for d in deployment.values() if not d.here}):
        say(f"no credentials here for {provider} (set {credential_variables(provider)}): "
            "provider test and reconcile need them; list and resume do not")  # fmt: skip


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):  # a catch-up: its pass and how far
        percent = value["percent"]
        return value["stage"] if percent is None else f"{value['stage']} {percent}%"
    return value


def catch_up_text(target: str, at: dict[str, Any]) -> str:
    """Where a target's catch-up stands, as a line: the blocked numbers it has gone
    through (about: read from its place in the index), or its pass over the ledger."""
    percent = at["percent"]
    if at["stage"] == "ledger":
        return (f"catching up {target}: blocked numbers done; ledger {percent}% (what it "
                "held before, checked again)")  # fmt: skip
    if percent is None:
        return f"catching up {target}: reading the blocked index of the release before"
    return (f"catching up {target}: blocked numbers {percent}% (about {at['done_about']:,} "
            f"of {at['blocked']:,})")  # fmt: skip


def not_here(ctx: Context, name: str, action: str) -> str:
    """Why this process cannot `action` provider `name`: it lacks the credentials of a
    provider the deployment has on (and which variables to set), or the provider is on
    nowhere (and which are), or there is no such provider."""
    from worker.providers import PROVIDERS

    deployment = ctx.deployment()
    on = live_providers(deployment)
    elsewhere = f"on in the deployment: {', '.join(on) or 'none'}"
    if name not in PROVIDERS:
        return f"{name} is not a provider (providers: {', '.join(PROVIDERS)}); {elsewhere}"
    if name in on:
        return (
            f"{name} is on in the deployment, but this process has no credentials for it: "
            f"to {action} it from here, set {credential_variables(name)} (as the workers have "
            "them)"
        )
    if any(d.provider == name for d in deployment.values()):
        return f"{name} is not on: no running process announces it any more; {elsewhere}"
    return (
        f"{name} is not on: no process of the deployment announces it, and this process has "
        f"no credentials for it; {elsewhere}"
    )


def _provider(ctx: Context, name: str, action: str) -> Provider:
    """This process's adapter of `name`, or exit 2 saying why there is none."""
    provider = ctx.providers.get(name)
    if provider is None:
        fail(not_here(ctx, name, action))
    return provider


def _probe(ctx: Context, name: str, provider: Provider) -> None:
    """Probe with this process's credentials; exit 1 when refused or failing."""
    from worker.providers.errors import AuthError, ProviderError

    try:
        provider.probe()
    except AuthError as exc:
        fail(f"{name}: credentials refused ({exc.reason}); fix {exc.setting}", 1)
    except ProviderError as exc:
        fail(f"{name}: probe failed: {exc}", 1)


@app.command("test")
def provider_test(name: NameArg) -> None:
    """Probe a provider's credentials (this process's: set them here) with a call that
    changes nothing."""
    ctx = open_context()
    _probe(ctx, name, _provider(ctx, name, "probe"))
    console.print(f"{name}: ok")
    if name not in live_providers(ctx.deployment()):
        say(f"note: no running process announces {name}: the deployment does not push to it")


@app.command("resume")
def provider_resume(name: NameArg) -> None:
    """Resume a paused provider and push what is staged for it. With its credentials here,
    probe first and resume only if it answers; without them (a terminal beside the workers),
    resume without a probe: the workers' next push tests their credentials, and pauses it
    again if they are still refused."""
    ctx = open_context()
    from worker.pipeline.batching import ALL
    from worker.providers.base import Action

    provider = ctx.providers.get(name)
    if provider is not None:
        _probe(ctx, name, provider)
    elif name in live_providers(ctx.deployment()):
        say(f"{name}: probe skipped: this process has no credentials for it (set "
            f"{credential_variables(name)} to probe first); the workers' next push tests "
            f"theirs, and pauses it again if they are refused")  # fmt: skip
    else:
        fail(not_here(ctx, name, "resume"))
    was_paused = ctx.store.resume(name, who())
    targets = [t for t, d in ctx.deployment().items() if d.provider == name and (d.live or d.here)]
    for target in targets:
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
    what is missing, report what is extra. Reading a list takes the provider's credentials
    in this process."""
    ctx = open_context()
    from worker.ops.reconcile import reconcile
    from worker.providers import PROVIDERS, RECONCILABLE
    from worker.providers.errors import ProviderError

    if provider in PROVIDERS and provider not in RECONCILABLE:
        fail(f"{provider} cannot list its blacklist: reconcile compares "
             f"{', '.join(RECONCILABLE)} with the ledger")  # fmt: skip
    if provider:
        _provider(ctx, provider, "reconcile")
    lacking = [
        p for p in live_providers(ctx.deployment())
        if p in RECONCILABLE and p not in ctx.providers and provider in (None, p)
    ]  # fmt: skip
    for name in lacking:
        err.print(f"skipped {name}: this process has no credentials for it (set "
                  f"{credential_variables(name)} to read its list)", style="yellow",
                  markup=False, highlight=False)  # fmt: skip
    with Bars() as bars:
        try:
            reports = reconcile(ctx, provider, remove_extras, who=who(), progress=bars)
        except ProviderError as exc:
            fail(f"reconcile stopped: {exc}", 1)
    for r in reports:
        for n in r.extras_sample:
            say(f"extra at {r.target}: {n}")
        if r.extras > len(r.extras_sample):
            say(f"extra at {r.target}: {r.extras - len(r.extras_sample)} more")
    if not reports:
        if lacking:
            raise typer.Exit(2)
        say(f"no provider on here can list its blacklist ({', '.join(RECONCILABLE)} can)")
        return
    records = [
        {"target": r.target, "provider_holds": r.listed, "ledger_blocks": r.blocked,
         "missing_repushed": r.missing, "extra": r.extras, "extra_removing": r.removing}
        for r in reports
    ]  # fmt: skip
    listing("reconciliation", columns(*records[0]), records, as_json)
