"""The `optout` command line: run the service, inspect numbers, replay dead letters."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from config import ConfigError, Settings, load_settings
from worker.runtime import logs

app = typer.Typer(help="optout-worker: durable opt-out propagation.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
provider_app = typer.Typer(help="Provider status, probes and resume.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(provider_app, name="provider")

console = Console()
err = Console(stderr=True)

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    logs.configure(settings.log_format)
    return settings


def _pipeline() -> Any:
    settings = _settings()
    from worker.runtime import wiring
    from worker.runtime.embedded import running_url

    if not settings.redis_url and (url := running_url(settings.data_dir)):
        # `optout up` is running here with its embedded Redis.
        settings = settings.model_copy(update={"redis_url": url})
    wiring.configure(settings)

    try:
        return wiring.pipeline()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _ms_to_text(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command()
def api(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes (each its own event loop).")
    ] = 1,
) -> None:
    """Serve the HTTP API."""
    settings = _settings()
    import uvicorn

    if not settings.redis_url:
        err.print("[red]REDIS_URL is not set[/red] (optout up starts an embedded Redis)")
        raise typer.Exit(2)
    if workers > 1:
        # Each process counts its own requests; /metrics must add them up.
        _multiprocess_metrics(settings.data_dir / "metrics" / f"api-{os.getpid()}")
    uvicorn.run(
        "worker.ingress.asgi:create",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        access_log=False,  # ours logs the path without the query string
        log_level="warning",
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes of the main group.")
    ] = None,
    beat: Annotated[bool, typer.Option(help="Also run the beat scheduler in-process.")] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics of this machine on this port.")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="Run one group only: main (flushes, sweeps, bulk providers) or per-number "
            "(providers without a bulk endpoint, reconciliation). Default: each group that "
            "has work, in a process of its own."
        ),
    ] = None,
) -> None:
    """Run the Celery workers: the main group (flushes, sweeps, bulk providers) and, when a
    provider without a bulk endpoint is on, the per-number group beside it, so a slow
    provider's backlog never holds up the others."""
    settings = _settings()
    from worker.runtime.celery_app import MAIN, PER_NUMBER, worker_groups

    groups = worker_groups(settings)
    if group is not None and group not in (MAIN, PER_NUMBER):
        err.print(f"[red]--group must be {MAIN} or {PER_NUMBER}[/red]")
        raise typer.Exit(2)
    if metrics_port:
        _multiprocess_metrics(settings.data_dir / "metrics" / f"worker-{os.getpid()}")
    if group is None and len(groups) > 1:
        _supervise_groups(list(groups), concurrency, beat, metrics_port)
        return
    chosen = group or MAIN
    if chosen not in groups:
        err.print(f"[red]no {chosen} group here: no provider without a bulk endpoint is "
                  "enabled (VOODOOSMS_*, WEYA_*, DAKTELA_*)[/red]")  # fmt: skip
        raise typer.Exit(2)
    if metrics_port:
        from worker.ops import metrics

        metrics.serve(metrics_port)
    from worker.runtime.wiring import celery_app

    argv = [
        "worker",
        "--loglevel=INFO",
        # Unique per process: RabbitMQ refuses a second worker of the same name its
        # remote-control queue (exclusive), and the worker exits.
        f"--hostname={chosen}-{os.getpid()}@%h",
        "--queues=" + ",".join(groups.get(chosen, [])),
        "--without-gossip",
        "--without-mingle",
    ]
    # Processes in both: a push fans its requests out to the provider's concurrency in
    # threads of its own, so a few processes keep a provider's cap busy; a pool of threads
    # instead ran every push under one GIL (per-number pushes at 0 ms: 896 -> 379/s).
    count = settings.per_number_concurrency if chosen == PER_NUMBER else None
    argv.append(f"--concurrency={count or concurrency or settings.worker_concurrency}")
    if beat and chosen == MAIN:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    celery_app().worker_main(argv)


def _supervise_groups(
    groups: list[str], concurrency: int | None, beat: bool, metrics_port: int | None
) -> None:
    """Run each worker group as a child process; SIGTERM or Ctrl-C stops them (warm
    shutdown); when one exits, the other is stopped and its exit code is ours, for the
    supervisor above (`optout up`, systemd, Kubernetes) to restart."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name in groups:
        argv = [sys.executable, "-m", "worker.cli.main", "worker", "--group", name]
        if name == groups[0]:
            argv += [*(["--concurrency", str(concurrency)] if concurrency else []),
                     *(["--beat"] if beat else []),
                     *(["--metrics-port", str(metrics_port)] if metrics_port else [])]  # fmt: skip
        children[name] = subprocess.Popen(argv, preexec_fn=_die_with_parent)  # noqa: S603, PLW1509
    stop = _StopSignal()
    code = 0
    while not stop.requested:
        exited = [c for c in children.values() if c.poll() is not None]
        if exited:
            code = exited[0].returncode or 1
            break
        time.sleep(0.2)
    _stop_children(children.values(), timeout=60)
    raise typer.Exit(code)


class _StopSignal:
    """Set by SIGINT (Ctrl-C) or SIGTERM: a supervisor runs its children until then."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._request)
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_: Any) -> None:
        self.requested = True


def _stop_children(children: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every child still running (a warm shutdown for Celery and uvicorn), wait up
    to `timeout` seconds for all of them, then kill what is left."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in running:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _die_with_parent() -> None:
    # Linux: a worker group never outlives its supervisor (kill -9 of `optout worker`).
    import contextlib
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@app.command("beat")
def beat_cmd() -> None:
    """Run the beat scheduler (exactly one per deployment): sweeps and lease recovery."""
    settings = _settings()
    from worker.runtime.wiring import celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery_app().start(
        ["beat", "--loglevel=INFO", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    )


@app.command()
def up(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Run everything on this machine: Redis (embedded when REDIS_URL is unset), the API,
    a worker and beat. Ctrl-C stops all of it; a restart keeps every accepted opt-out."""
    settings = _settings()
    from worker.runtime.embedded import EmbeddedRedis

    env = dict(os.environ)
    embedded: EmbeddedRedis | None = None
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.redis_url:
        embedded = EmbeddedRedis(data_dir / "redis").start()
        env["REDIS_URL"] = embedded.url
        console.print(f"embedded Redis on {embedded.url} (AOF always, data in {data_dir})")
    if settings.admin_token is None:
        env["OPTOUT_ADMIN_TOKEN"] = _local_admin_token(data_dir)
        console.print(f"admin token: {data_dir / 'admin-token'} (set OPTOUT_ADMIN_TOKEN to choose)")
    if not settings.enabled_providers():
        console.print(
            "[yellow]no provider is configured: opt-outs are kept in the ledger and pushed "
            "once one is (see README, Configuration)[/yellow]"
        )
    env["OPTOUT_DATA_DIR"] = str(data_dir)
    # One metrics directory for the whole tree: the API's /metrics shows the worker's too.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_dir(data_dir / "metrics" / "up"))
    me = [sys.executable, "-m", "worker.cli.main"]
    roles = {
        "api": [*me, "api", "--host", host, "--port", str(port)],
        "worker": [*me, "worker"],
        "beat": [*me, "beat"],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    stop = _StopSignal()
    code = 0
    restarts: dict[str, list[float]] = {role: [] for role in roles}

    def spawn(role: str) -> None:
        # Own session: Ctrl-C reaches only us, and we stop each child exactly once.
        children[role] = subprocess.Popen(roles[role], env=env, start_new_session=True)  # noqa: S603

    try:
        for role in roles:
            spawn(role)
        console.print(f"optout up: API on http://{host}:{port}  (Ctrl-C to stop)")
        while not stop.requested:
            if embedded is not None and not embedded.alive():
                err.print(
                    "[yellow]embedded Redis exited; restarting it (AOF keeps its data)[/yellow]"
                )
                embedded.start()
            for role, child in list(children.items()):
                if child.poll() is None or stop.requested:
                    continue
                now = time.monotonic()
                restarts[role] = [t for t in restarts[role] if now - t < 60] + [now]
                if len(restarts[role]) > 5:
                    err.print(f"[red]{role} keeps exiting ({child.returncode}); stopping[/red]")
                    stop.requested = True
                    code = 1
                else:
                    err.print(f"[yellow]{role} exited with {child.returncode}; restarting[/yellow]")
                    spawn(role)
            time.sleep(0.3)
    finally:
        console.print("stopping ...")
        _stop_children(children.values(), timeout=30)
        if embedded is not None:
            embedded.stop()
        console.print("stopped")
    raise typer.Exit(code)


@app.command()
def consume(
    url: Annotated[str, typer.Option(help="Broker URL: amqp://... or redis://...")],
    queue: Annotated[str, typer.Option(help="Queue to consume (declared durable).")],
    prefetch: Annotated[int, typer.Option(help="Unacked messages in hand at most.")] = 10,
    allow_remove: Annotated[
        bool, typer.Option(help="Accept removes too (otherwise they are parked).")
    ] = False,
    visibility_timeout: Annotated[
        float,
        typer.Option(help="Redis transport: seconds before a dead consumer's messages return."),
    ] = 60.0,
) -> None:
    """Consume opt-out messages from a broker queue; ack each only once it is staged.
    Invalid messages go to QUEUE.rejected with the reason. SIGTERM finishes the message in
    hand and stops."""
    pipe = _pipeline()
    from worker.ingress.consumer import OptoutConsumer, connect

    with connect(url, pipe.settings.key_prefix, visibility_timeout) as connection:
        consumer = OptoutConsumer(pipe, connection, queue, prefetch, allow_remove)

        def stop(*_: Any) -> None:
            consumer.should_stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        console.print(f"consuming {queue} (rejected messages go to {queue}.rejected)")
        consumer.run()
    console.print(f"stopped after {consumer.handled} messages")


def _progress_over(path: Path, label: str) -> Any:
    """A rich progress bar over a file's bytes, and the callback that advances it."""
    progress = Progress(console=console, transient=False)
    task = progress.add_task(label, total=path.stat().st_size)
    return progress, lambda done: progress.update(task, completed=done)


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    action: Annotated[str, typer.Option(help="add (opt-out) or remove (opt-in).")] = "add",
    source: Annotated[str, typer.Option(help="Source recorded on every row.")] = "import",
    as_of: Annotated[
        str | None,
        typer.Option(help="When the list was true (ISO 8601). Required for remove."),
    ] = None,
    column: Annotated[str | None, typer.Option(help="Phone column (default: phone).")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Rejected rows go here (default FILE.rejected.csv).")
    ] = None,
) -> None:
    """Import a CSV of numbers, streamed; rejected rows and reasons go to a report file.
    Safe to run twice: each batch is idempotent."""
    from worker.ingress.importer import import_csv
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
    pipe = _pipeline()
    report_path = report or file.with_name(file.name + ".rejected.csv")
    progress, advance = _progress_over(file, "importing")
    try:
        with progress:
            result = import_csv(
                pipe,
                file,
                action=Action(action),
                source=source,
                as_of=when,
                report_path=report_path,
                column=column,
                progress=advance,
            )
    except (AcceptError, ValueError) as exc:
        err.print(f"[red]import stopped: {getattr(exc, 'message', exc)}[/red] (re-run to resume)")
        raise typer.Exit(1) from None
    console.print(
        f"rows {result.rows}: accepted {result.accepted}, rejected {result.rejected} "
        f"(see {report_path}), already imported batches {result.repeated_batches}"
    )


@app.command()
def scrub(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    out: Annotated[Path | None, typer.Option(help="Default FILE.dialable.csv.")] = None,
    column: Annotated[str | None, typer.Option(help="Phone column (default: phone).")] = None,
) -> None:
    """Write the dialable rows of a campaign list: numbers the ledger does not block."""
    from worker.ingress.importer import scrub_csv

    pipe = _pipeline()
    out_path = out or file.with_name(file.stem + ".dialable.csv")
    progress, advance = _progress_over(file, "scrubbing")
    with progress:
        result = scrub_csv(pipe, file, out_path, column=column, progress=advance)
    console.print(
        f"rows {result.rows}: dialable {result.dialable} (written to {out_path}), "
        f"blocked {result.blocked}, not a phone number {result.rejected}"
    )


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def _multiprocess_metrics(default: Path) -> None:
    """Celery's prefork children count in their own processes: prometheus_client must be in
    multiprocess mode before it is first imported."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_dir(default))


@app.command()
def sla(
    age: Annotated[
        str | None,
        typer.Option(help="Older than this: 24h, 90m, 3600 (default OPTOUT_SLA_SECONDS)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most N.")] = 200,
) -> None:
    """Numbers whose latest state is not yet confirmed on every provider after AGE."""
    pipe = _pipeline()
    from worker.ops.sla import overdue

    seconds = pipe.settings.sla_seconds if age is None else _duration(age)
    late = overdue(pipe, seconds, limit=limit)
    table = Table("phone", "state", "age", "still pending at", title=f"not confirmed after "
                  f"{seconds / 3600:g} h: {len(late)}")  # fmt: skip
    for row in late:
        table.add_row(row.phone, row.state, f"{row.age_seconds / 3600:.1f} h",
                      ", ".join(row.pending))  # fmt: skip
    console.print(table)
    raise typer.Exit(1 if late else 0)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        err.print(f"[red]{text!r} is not a duration (e.g. 24h, 90m, 3600)[/red]")
        raise typer.Exit(2) from None


def _local_admin_token(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


@app.command()
def status(
    phone: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show one number: desired state, expiry, each provider's status, the audit trail."""
    pipe = _pipeline()
    from worker.domain.phones import Rejected, normalise
    from worker.ingress.api import number_view

    normal = normalise(phone, pipe.settings.default_region)
    if isinstance(normal, Rejected):
        err.print(f"[red]not a phone number: {normal.reason}[/red]")
        raise typer.Exit(2)
    view = number_view(pipe, normal.e164)
    if as_json:
        typer.echo(json.dumps(view, sort_keys=True))
    if not view["known"]:
        console.print(f"{normal.e164}: no opt-out or opt-in recorded")
        raise typer.Exit(1)
    if as_json:
        return
    console.print(
        f"[bold]{view['phone']}[/bold]  state={view['state']}  version={view['version']}  "
        f"expires={_ms_to_text(view['expires_at_ms'])}"
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
            _ms_to_text(entry.get("at")),
            str(entry.get("ev", ""))[:12],
            what,
            str(entry.get("res") or entry.get("out") or ""),
            ": ".join(str(entry[k]) for k in ("src", "rsn", "det") if entry.get(k)),
        )
    console.print(audit)


def _dead_letter_filter(
    provider: str | None,
    action: str | None,
    reason: str | None,
    phone: str | None,
    older_than: float | None,
    ids: list[str] | None,
) -> Any:
    from worker.ops.deadletters import DeadLetterFilter

    return DeadLetterFilter(provider, action, reason, phone, older_than, tuple(ids or ()))


ProviderOpt = Annotated[str | None, typer.Option(help="Only this provider (or target).")]
ActionOpt = Annotated[str | None, typer.Option(help="Only add or remove.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Only reasons containing this.")]
PhoneOpt = Annotated[str | None, typer.Option(help="Only this E.164 number.")]
OlderOpt = Annotated[float | None, typer.Option(help="Only entries older than N seconds.")]


@dlq_app.command("list")
def dlq_list(
    provider: ProviderOpt = None,
    action: ActionOpt = None,
    reason: ReasonOpt = None,
    phone: PhoneOpt = None,
    older_than: OlderOpt = None,
    limit: Annotated[int, typer.Option(help="Show at most N.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip the first N (paging).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters, oldest first."""
    pipe = _pipeline()
    from worker.ops.deadletters import select

    flt = _dead_letter_filter(provider, action, reason, phone, older_than, None)
    entries = select(pipe.store.dead_letters(), flt, pipe.store.now_ms())
    total = len(entries)
    entries = entries[offset:]
    if as_json:
        for e in entries[:limit]:
            typer.echo(json.dumps(e, sort_keys=True))
        return
    table = Table("id", "action", "reason", "last error", "attempts", "first", "last",
                  title=f"dead letters: {total}")  # fmt: skip
    for e in entries[:limit]:
        table.add_row(
            e["id"],
            e.get("action", ""),
            e.get("reason", ""),
            str(e.get("last_error", ""))[:60],
            str(e.get("attempts", "")),
            _ms_to_text(e.get("first_at")),
            _ms_to_text(e.get("last_at")),
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(entry_id: str) -> None:
    """One dead letter in full, with the number's audit trail."""
    pipe = _pipeline()
    entry = next((e for e in pipe.store.dead_letters() if e["id"] == entry_id), None)
    if entry is None:
        err.print(f"[red]no dead letter {entry_id}[/red] (ids look like voicenter|+972501234567)")
        raise typer.Exit(1)
    typer.echo(json.dumps(entry, indent=2, sort_keys=True))
    typer.echo(json.dumps(pipe.store.audit(entry["phone"], limit=20), indent=2))


@dlq_app.command("purge")
def dlq_purge(
    ids: Annotated[list[str] | None, typer.Option("--id", help="Entry id (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every entry the filters match.")] = False,
    provider: ProviderOpt = None,
    action: ActionOpt = None,
    reason: ReasonOpt = None,
    phone: PhoneOpt = None,
    older_than: OlderOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be purged.")] = False,
) -> None:
    """Drop dead letters (giving up on them at that provider); each purge is audited."""
    chosen, pipe = _chosen("purge", all_, provider, action, reason, phone, older_than, ids)
    if dry_run:
        console.print(f"would purge {len(chosen)} dead letters")
        return
    who = f"cli:{os.environ.get('USER', 'unknown')}"
    done = _in_batches(chosen, lambda batch: int(pipe.store.purge(batch, who)), "purging")
    console.print(f"purged {done} dead letters")


def _chosen(
    verb: str,
    all_: bool,
    provider: str | None,
    action: str | None,
    reason: str | None,
    phone: str | None,
    older_than: float | None,
    ids: list[str] | None,
) -> tuple[list[str], Any]:
    """The dead-letter ids an operator chose (refusing to guess when nothing was said)."""
    if not (ids or all_ or provider or action or reason or phone or older_than):
        err.print(f"[red]say what to {verb}: --id, filters, or --all[/red]")
        raise typer.Exit(2)
    pipe = _pipeline()
    from worker.ops.deadletters import select

    flt = _dead_letter_filter(provider, action, reason, phone, older_than, ids)
    entries = select(pipe.store.dead_letters(), flt, pipe.store.now_ms())
    return [e["id"] for e in entries], pipe


def _in_batches(items: list[str], run: Any, label: str, size: int = 500) -> int:
    done = 0
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(label, total=len(items))
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            done += run(batch)
            progress.advance(task, len(batch))
    return done


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Option("--id", help="Entry id (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every entry the filters match.")] = False,
    provider: ProviderOpt = None,
    action: ActionOpt = None,
    reason: ReasonOpt = None,
    phone: PhoneOpt = None,
    older_than: OlderOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be replayed.")] = False,
) -> None:
    """Put dead letters back into their batches; each leaves the store once delivered."""
    chosen, pipe = _chosen("replay", all_, provider, action, reason, phone, older_than, ids)
    from worker.pipeline.batching import replay

    if dry_run:
        console.print(f"would replay {len(chosen)} dead letters")
        for entry_id in chosen[:50]:
            console.print(f"  {entry_id}")
        return
    who = f"cli:{os.environ.get('USER', 'unknown')}"
    done = _in_batches(chosen, lambda batch: replay(pipe, batch, who), "replaying")
    console.print(f"replayed {done} dead letters")
    if done < len(chosen):
        console.print(
            f"{len(chosen) - done} not replayed: gone meanwhile, or their target is not live "
            "(no process has it): replay them again once it is back, or purge them if it is "
            "gone for good"
        )


@provider_app.command("list")
def provider_list() -> None:
    """Each provider target: paused or not, staged, in flight; retry and dead-letter totals."""
    pipe = _pipeline()
    paused = pipe.store.paused()
    targets = pipe.targets()
    counts = pipe.store.counts(sorted(targets))
    retrying = pipe.store.retry_counts()
    dead_by_target = pipe.store.dead_letter_counts()
    table = Table("target", "provider", "state", "staged add", "staged remove", "in flight",
                  "retrying", "dead letters")  # fmt: skip
    circuits = pipe.store.open_circuits(set(targets.values()))
    for target in sorted(targets):
        provider = targets[target]
        state = "paused: " + paused[provider]["reason"] if provider in paused else "active"
        held = pipe.store.held_for(provider)
        if not paused.get(provider) and provider in circuits:
            state = f"circuit open, next probe in {held:.0f}s" if held else "circuit probing"
        elif not paused.get(provider) and held:
            state = f"holding {held:.0f}s (Retry-After)"
        c = counts[target]
        table.add_row(target, provider, state, str(c["staged_add"]), str(c["staged_remove"]),
                      str(c["in_flight"]), str(retrying.get(target, 0)),
                      str(dead_by_target.get(target, 0)))  # fmt: skip
    console.print(table)
    console.print(f"dead letters: {sum(dead_by_target.values())}")
    for provider, info in paused.items():
        console.print(f"[red]{provider} paused[/red]: {info['reason']}; fix {info['setting']}, "
                      f"then: optout provider resume {provider}")  # fmt: skip


def _provider(pipe: Any, name: str) -> Any:
    provider = pipe.providers.get(name)
    if provider is None:
        err.print(
            f"[red]{name} is not enabled[/red] (enabled: {', '.join(pipe.providers) or 'none'})"
        )
        raise typer.Exit(2)
    return provider


@provider_app.command("test")
def provider_test(name: str) -> None:
    """Probe a provider's credentials with a call that changes nothing."""
    pipe = _pipeline()
    from worker.providers.errors import AuthError, ProviderError

    try:
        _provider(pipe, name).probe()
    except AuthError as exc:
        err.print(f"[red]{name}: credentials refused ({exc.reason}); fix {exc.setting}[/red]")
        raise typer.Exit(1) from None
    except ProviderError as exc:
        err.print(f"[red]{name}: probe failed: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{name}: ok")


@provider_app.command("resume")
def provider_resume(name: str) -> None:
    """Probe a paused provider and, if it answers, resume it and push what is staged."""
    provider_test(name)
    pipe = _pipeline()
    from worker.pipeline.batching import ALL
    from worker.providers.base import Action

    was_paused = pipe.store.resume(name)
    for target in _provider(pipe, name).targets():
        for action in Action:
            pipe.dispatcher.flush(target, action, ALL)
    console.print(
        f"{name}: {'resumed' if was_paused else 'was not paused'}; staged numbers flushing"
    )


@app.command("reconcile")
def reconcile_cmd(
    provider: Annotated[str | None, typer.Argument(help="One provider (default: all).")] = None,
    remove_extras: Annotated[
        bool, typer.Option(help="Remove numbers a provider holds that the ledger does not block.")
    ] = False,
) -> None:
    """Compare each provider's list with the ledger (Phonely, VoodooSMS, Daktela): re-push
    what is missing, report what is extra."""
    pipe = _pipeline()
    from worker.ops.reconcile import reconcile
    from worker.providers.errors import ProviderError

    if provider and provider not in pipe.providers:
        err.print(f"[red]{provider} is not enabled[/red]")
        raise typer.Exit(2)
    with console.status("listing provider blacklists ..."):
        try:
            reports = reconcile(
                pipe, provider, remove_extras, who=f"cli:{os.environ.get('USER', 'unknown')}"
            )
        except ProviderError as exc:
            err.print(f"[red]reconcile stopped: {exc}[/red]")
            raise typer.Exit(1) from None
    table = Table("target", "provider holds", "ledger blocks", "missing (re-pushed)",
                  "extra", "extra being removed", title="reconciliation")  # fmt: skip
    for r in reports:
        table.add_row(r.target, str(r.listed), str(r.blocked), str(len(r.missing)),
                      str(len(r.extras)), str(r.removing))  # fmt: skip
    for r in reports:
        for n in r.extras[:20]:
            console.print(f"extra at {r.target}: {n}")
    if not reports:
        console.print(
            "no enabled provider can list its blacklist (Phonely, VoodooSMS, Daktela can)"
        )
    console.print(table)


@app.command()
def healthcheck(
    url: Annotated[
        str | None, typer.Option(help="An HTTP URL to GET instead (the API's /healthz).")
    ] = None,
) -> None:
    """Exit 0 when healthy: the URL answers 2xx, or Redis and the broker answer. For
    container HEALTHCHECKs and systemd watchdogs."""
    if url:
        import httpx

        try:
            ok = httpx.get(url, timeout=3).is_success
        except httpx.HTTPError:
            ok = False
    else:
        settings = _settings()
        from worker.ingress.api import broker_check
        from worker.runtime.wiring import redis_client

        try:
            ok = bool(redis_client(settings).ping()) and broker_check(settings.broker_url) == "ok"
        except Exception:  # noqa: BLE001
            ok = False  # whatever failed, the process is not healthy
    if not ok:
        err.print("unhealthy")
        raise typer.Exit(1)
    console.print("healthy")


@app.command("check-config")
def check_config() -> None:
    """Validate the configuration and print it, secrets masked."""
    settings = _settings()
    table = Table("variable", "value", title="effective configuration")
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        shown = _show(value)
        table.add_row(field.alias or name, shown)
    console.print(table)
    enabled = settings.enabled_providers()
    console.print(f"providers enabled: {', '.join(enabled) if enabled else 'none'}")


def _show(value: Any) -> str:
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else "(empty)"
    if isinstance(value, dict):
        return ", ".join(f"{k}:{_show(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value) or "-"
    if value is None:
        return "-"
    if isinstance(value, str) and "@" in value and "://" in value:
        # A URL with credentials: show the host only.
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return str(value)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
