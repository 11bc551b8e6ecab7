"""Commands that run the service: api, worker, beat, up, consume, healthcheck."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.common import (
    HostOpt,
    PortOpt,
    Verbosity,
    console,
    err,
    fail,
    fresh_dir,
    group,
    hand_over_quietly,
    here,
    multiprocess_metrics,
    open_context,
    read_settings,
    require_redis,
)
from worker.cli.supervisor import claim, keep_running, local_admin_token, supervise_groups

if TYPE_CHECKING:
    from config import Settings

app = group()


@app.command()
def api(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: Annotated[
        int, typer.Option(metavar="N", min=1, help="Server processes (each its own event loop).")
    ] = 1,
) -> None:
    """Serve the HTTP API."""
    settings = read_settings(service=True)
    require_redis(settings)
    import uvicorn

    if workers > 1:
        # Each process counts its own requests; /metrics must add them up.
        multiprocess_metrics(settings.data_dir / "metrics" / f"api-{os.getpid()}")
    uvicorn.run(
        "worker.ingress.asgi:create",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        access_log=False,  # ours logs the path without the query string
        log_level="warning",
        # uvicorn's own handlers would write plain text past the masking: its records go to
        # the root logger, set up by logs.configure (in each server process: asgi.create).
        log_config=None,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(metavar="N", help="Worker processes of the main group.")
    ] = None,
    beat: Annotated[bool, typer.Option(help="Also run the beat scheduler in-process.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Serve Prometheus metrics of this machine on this port."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            metavar="main|per-number",
            help="Run one group only: main (flushes, sweeps, bulk providers) or per-number "
            "(providers without a bulk endpoint, reconciliation). Default: each group that "
            "has work, in a process of its own.",
        ),
    ] = None,
) -> None:
    """Run the Celery workers: the main group (flushes, sweeps, bulk providers) and, when a
    provider without a bulk endpoint is on, the per-number group beside it, so a slow
    provider's backlog never holds up the others."""
    settings = read_settings(service=True)
    require_redis(settings)
    from worker.runtime.celery_app import MAIN, PER_NUMBER, worker_groups

    groups = worker_groups(settings)
    if group is not None and group not in (MAIN, PER_NUMBER):
        err.print(f"[red]--group must be {MAIN} or {PER_NUMBER}[/red]")
        raise typer.Exit(2)
    if metrics_port:
        multiprocess_metrics(settings.data_dir / "metrics" / f"worker-{os.getpid()}")
    if group is None and len(groups) > 1:
        raise typer.Exit(supervise_groups(list(groups), concurrency, beat, metrics_port))
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
    # would run every push under one GIL.
    count = settings.per_number_concurrency if chosen == PER_NUMBER else None
    argv.append(f"--concurrency={count or concurrency or settings.worker_concurrency}")
    if beat and chosen == MAIN:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    celery_app().worker_main(argv)


@app.command("beat")
def beat_cmd() -> None:
    """Run the beat scheduler (exactly one per deployment): sweeps and lease recovery."""
    settings = read_settings(service=True)
    require_redis(settings)
    from worker.runtime.wiring import celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery_app().start(
        ["beat", "--loglevel=INFO", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    )


@app.command()
def up(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Run everything on this machine: Redis (embedded when REDIS_URL is unset), the API,
    a worker and beat; a short summary here, their logs in DATA_DIR/logs/optout.log
    (optout --verbose up: here too). Ctrl-C stops all of it; a restart keeps every accepted
    opt-out."""
    settings = read_settings(service=True)
    from worker.runtime import logs
    from worker.runtime.embedded import EmbeddedRedis

    env = dict(os.environ)
    embedded: EmbeddedRedis | None = None
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = claim(data_dir)
    if lock is None:
        holder = (data_dir / "up.lock").read_text().strip() or "?"
        fail(f"an `optout up` already runs with the data dir {here(data_dir)} (pid {holder}): "
             "use it (the ops commands find it from this folder), stop it first, or give this "
             "one another OPTOUT_DATA_DIR")  # fmt: skip
    # Every part's output (Celery's banner, warnings, JSON lines) goes here, and this
    # process's own lines too: the terminal keeps the summary and what needs a person.
    log = logs.LogFile(data_dir / "logs" / "optout.log",
                       echo=sys.stderr if Verbosity.on else None)  # fmt: skip
    logs.configure(settings.log_format, sink=log)
    summary = [("API", f"http://{host}:{port} (docs: /docs)")]
    if not settings.redis_configured:
        embedded = EmbeddedRedis(data_dir / "redis").start()
        env["REDIS_URL"] = embedded.url
        summary.append(("Redis", f"embedded {embedded.url} (AOF always, data in {here(data_dir)})"))
    elif settings.redis_url:
        summary.append(("Redis", _without_password(settings.redis_url)))
    else:
        from worker.runtime.redis_clients import primary_or_reason, redis_client

        where = primary_or_reason(redis_client(settings))
        summary.append(
            ("Redis", f"Sentinel master {settings.redis_sentinel_master}, primary {where}")
        )
    summary.append(("providers", _providers(settings)))
    summary.append(("archive", _archive(settings)))
    if settings.admin_token is None:
        env["OPTOUT_ADMIN_TOKEN"] = local_admin_token(data_dir)
        where = f"{here(data_dir / 'admin-token')} (set OPTOUT_ADMIN_TOKEN to choose)"
    else:
        where = "from OPTOUT_ADMIN_TOKEN"
    summary.append(("admin token", where))
    summary.append(
        ("logs", here(log.path) + ("" if Verbosity.on else " (optout --verbose up: here too)"))
    )
    env["OPTOUT_DATA_DIR"] = str(data_dir)
    # One metrics directory for the whole tree: the API's /metrics shows the worker's too.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_dir(data_dir / "metrics" / "up"))
    me = [sys.executable, "-m", "worker.cli"]
    roles = {
        "api": [*me, "api", "--host", host, "--port", str(port)],
        "worker": [*me, "worker"],
        "beat": [*me, "beat"],
    }
    width = max(len(name) for name, _ in summary)
    started = "\n".join(
        ["optout up", *(f"  {name:<{width}}  {value}" for name, value in summary), "Ctrl-C to stop"]
    )
    raise typer.Exit(keep_running(roles, env, embedded, started, log))


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _archive(settings: Settings) -> str:
    """The audit archive, migrated now (the workers would on first use): what it is, or why
    it cannot be reached (audit entries wait in Redis until it can)."""
    from worker.archive.database import Archive, ArchiveError

    archive = Archive(settings.archive_database_url)
    shown = archive.describe()
    if archive.dialect == "sqlite" and not settings.archive_url:
        shown = f"SQLite {here(settings.data_dir / 'archive.sqlite3')}"
    try:
        archive.migrate()
        return shown
    except ArchiveError as exc:
        return f"{shown}: {exc.message} (entries wait in Redis)"
    finally:
        archive.close()


def _providers(settings: Settings) -> str:
    """Each provider that is on and its targets (the blacklists it keeps), or how to turn
    one on."""
    import httpx

    from worker.providers import build_providers

    # Offline: building an adapter only reads its settings (targets: Phonely's agents...).
    with httpx.Client() as client:
        providers = build_providers(settings.providers, lambda _: client)
        shown = [f"{name} (targets: {', '.join(p.targets())})" for name, p in providers.items()]
    if shown:
        return ", ".join(shown)
    return "none (opt-outs wait in the ledger): set e.g. VOICENTER_API_CODE"


@app.command()
def consume(
    url: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="Broker URL: amqp://..., redis://... or sentinel://host:port;sentinel://...",
        ),
    ],
    queue: Annotated[
        str, typer.Option(metavar="QUEUE", help="Queue to consume (declared durable).")
    ],
    prefetch: Annotated[
        int, typer.Option(metavar="N", help="Unacked messages in hand at most.")
    ] = 10,
    allow_remove: Annotated[
        bool, typer.Option(help="Accept removes too (otherwise they are parked).")
    ] = False,
    visibility_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Redis transport: seconds before a dead consumer's messages return.",
        ),
    ] = 60.0,
) -> None:
    """Consume opt-out messages from a broker queue; ack each only once it is staged.
    Invalid messages go to QUEUE.rejected with the reason. SIGTERM finishes the message in
    hand and stops."""
    ctx = open_context(service=True)
    from worker.ingress.consumer import OptoutConsumer, connect
    from worker.ops.metrics import HandOver
    from worker.runtime.broker import SentinelOptions

    # Nothing scrapes a consumer: its counts reach the API's /metrics through Redis.
    hand_over = HandOver(ctx.store)
    sentinel = SentinelOptions.of(ctx.settings)
    with connect(url, ctx.settings.key_prefix, visibility_timeout, sentinel) as connection:
        consumer = OptoutConsumer(ctx, connection, queue, prefetch, allow_remove)

        def tick() -> None:
            if hand_over.due():
                hand_over_quietly(hand_over)

        consumer.tick = tick

        def stop(*_: Any) -> None:
            consumer.should_stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        console.print(f"consuming {queue} (rejected messages go to {queue}.rejected)")
        consumer.run()
    hand_over_quietly(hand_over)
    console.print(f"stopped after {consumer.handled} messages")


@app.command()
def healthcheck(
    url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="An HTTP URL to GET instead (the API's /healthz)."),
    ] = None,
) -> None:
    """Exit 0 when healthy: the URL answers 2xx, or Redis and the broker answer. For
    container HEALTHCHECKs and systemd watchdogs. Healthy Redis is named: the primary in use
    (with Sentinel, the one the Sentinels name now)."""
    where = ""
    if url:
        import httpx

        try:
            ok = httpx.get(url, timeout=3).is_success
        except httpx.HTTPError:
            ok = False
    else:
        settings = read_settings(service=True)
        from worker.ingress.api import broker_check
        from worker.runtime.embedded import redis_url_missing
        from worker.runtime.redis_clients import primary, redis_client
        from worker.state.store import Store

        if not settings.redis_configured:
            fail(f"unhealthy: {redis_url_missing(settings)}", 1)
        try:
            client = redis_client(settings)
            ok = bool(client.ping()) and broker_check(settings) == "ok"
            where = f" (Redis primary {primary(client)})"
            backlog = Store(client, prefix=settings.key_prefix).audit_backlog_length()
        except Exception:  # noqa: BLE001
            ok = False  # whatever failed, the process is not healthy
            backlog = 0
        if ok and backlog > settings.audit_backlog_alarm:
            # Said, not failed: a restart would not help, and the workers are what drains it.
            err.print(f"audit archive behind: {backlog} entries wait in Redis (alarm above "
                      f"{settings.audit_backlog_alarm}; opt-outs refused at "
                      f"{settings.audit_backlog_limit})")  # fmt: skip
    if not ok:
        err.print("unhealthy")
        raise typer.Exit(1)
    console.print("healthy" + where)
