"""Per-process wiring: settings read once, the Redis and HTTP clients, the pipeline context; and
the Celery signals that set up our logging, reset the context after a fork and keep this
process's targets announced."""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
from typing import Any

import httpx
import redis
import structlog
from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown
from celery.utils.log import get_multiprocessing_logger

from config import Settings, load_settings
from worker.archive.database import Archive
from worker.domain.phones import normalise_own_numbers
from worker.pipeline.context import Context, Dispatcher
from worker.providers import build_providers
from worker.providers.ratelimit import LimitedClient, SharedLimitTransport
from worker.runtime import logs
from worker.runtime.celery_app import CeleryDispatcher, create_celery
from worker.runtime.redis_clients import async_redis_client, clock_client, redis_client
from worker.state.async_accept import AsyncAccept, AsyncClientFactory
from worker.state.clock import ServerClock
from worker.state.keyspace import Clock
from worker.state.store import Store

_context: Context | None = None


_settings: Settings | None = None


def configure(value: Settings) -> None:
    """Use these settings in this process instead of reading the environment."""
    global _settings  # noqa: PLW0603
    _settings = value
    celery_app.cache_clear()
    reset()


def settings() -> Settings:
    global _settings  # noqa: PLW0603
    if _settings is None:
        _settings = load_settings()
    return _settings


@functools.cache
def celery_app() -> Celery:
    return create_celery(settings())


def provider_client(
    settings: Settings, store: Store, provider: str, tls: ssl.SSLContext | None = None
) -> httpx.Client:
    """A provider's own HTTP client, its requests limited across all workers; `tls`: the
    TLS settings every provider's client of a process shares (loading the CA bundle costs
    tens of ms of CPU per client), by default its own."""
    rps, concurrency = settings.limits_for(provider)
    timeout = settings.http_timeout_seconds
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    transport = SharedLimitTransport(
        httpx.HTTPTransport(verify=tls or httpx.create_ssl_context(), limits=limits),
        store,
        provider,
        rps=rps,
        concurrency=concurrency,
        lease_seconds=settings.slot_lease_seconds,
        # A request renews its chunk's lease with each try for a slot, the last just before
        # it is sent; the wait is bounded all the same, so that a push stuck behind a full
        # cap gives its chunk back in time rather than holding it.
        max_wait_seconds=min(30.0, settings.lease_seconds / 4),
    )
    return LimitedClient(
        transport,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        headers={"User-Agent": "optout-worker/0.1"},
    )


def build_context(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    http: httpx.Client | None = None,
    dispatcher: Dispatcher | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    async_client: AsyncClientFactory | None = None,
) -> Context:
    """Wire a pipeline from settings; tests pass their own Redis, HTTP client, dispatcher and
    clock (and an asyncio client factory to use the API's event-loop accept path). Without a
    clock, the Redis server's is every process's."""
    state = client
    if state is None:
        state = redis_client(settings)
        clock = clock or ServerClock(clock_client(settings))
    store = Store(
        state,
        prefix=settings.key_prefix,
        clock=clock,
        audit_cap=settings.audit_cap,
    )

    tls: list[ssl.SSLContext] = []

    def client_for(provider: str) -> httpx.Client:
        if http is not None:
            return http
        if not tls:
            tls.append(httpx.create_ssl_context())
        return provider_client(settings, store, provider, tls[0])

    if async_client is None and client is None:
        async_client = functools.partial(async_redis_client, settings)
    ctx = Context(
        settings=settings,
        store=store,
        providers=build_providers(settings.providers, client_for),
        dispatcher=dispatcher
        if dispatcher is not None
        else CeleryDispatcher(celery_app(), settings.queue_namespace),
        rng=rng or random.Random(),
        own_numbers=normalise_own_numbers(settings.own_numbers, settings.default_region),
        archive=Archive(settings.archive_database_url),
    )
    if async_client is not None:
        ctx.async_accept = AsyncAccept(store, async_client, ctx.replication())
    return ctx


_building = threading.Lock()


def context() -> Context:
    """This process's pipeline, built on first use (after any fork); one per process, also
    when a threads pool (`celery -A worker worker -P threads`) asks from several threads."""
    global _context  # noqa: PLW0603
    if _context is None:
        with _building:
            if _context is None:
                _context = build_context(settings())
    return _context


def reset() -> None:
    """Forget this process's context: the next use builds a new one (after a fork, or new
    settings)."""
    global _context  # noqa: PLW0603
    _context = None


@setup_logging.connect  # type: ignore[untyped-decorator]
def _our_logging(**_: Any) -> None:
    # Once anything answers this signal, Celery installs none of its plain-text handlers
    # (nor sends after_setup_logger): worker and beat log through ours, masked, as JSON.
    logs.configure(settings().log_format)
    # billiard's pool logger does not propagate; Celery would give it a handler of its own
    # at ERROR (a pool process that died, say).
    pool = get_multiprocessing_logger()
    pool.propagate = True
    pool.setLevel(logging.ERROR)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_process_state(**_: Any) -> None:
    # Connections and HTTP clients must never be shared across a fork.
    reset()
    # Built now, before the process takes a task (it connects to nothing yet), so that the
    # first opt-out after a start does not wait for it; on any failure, on first use.
    try:
        context()
    except Exception as exc:  # noqa: BLE001
        reset()
        structlog.get_logger("optout.worker").warning(
            "context_deferred", error=type(exc).__name__, detail=str(exc)[:200]
        )


_announcing = threading.Event()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_targets(**_: Any) -> None:
    # A worker keeps its targets live (register.lua) for as long as it runs, even while no
    # task reaches it: accepts anywhere stage for them, and a target whose worker
    # has gone for longer than the TTL is caught up when one comes back.
    log = structlog.get_logger("optout.worker")
    interval = settings().target_ttl_seconds / 3

    def announce() -> None:
        while not _announcing.is_set():
            try:
                context().ensure_registered(force=True)
            except Exception as exc:  # noqa: BLE001
                # Redis down: the next round tries again; the TTL outlasts a few misses.
                log.warning("announce_failed", error=type(exc).__name__)
            _announcing.wait(interval)

    _announcing.clear()
    threading.Thread(target=announce, name="optout-announce", daemon=True).start()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_announcing(**_: Any) -> None:
    _announcing.set()
