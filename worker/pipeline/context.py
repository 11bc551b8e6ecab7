"""The pipeline's context: settings, store, providers and dispatcher, built once per process
and passed to every pipeline function; and the live targets it announces and reads."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from config import Settings, routes_allow
from worker.archive.database import Archive
from worker.pipeline import lease
from worker.providers.base import Action, Provider
from worker.state.async_accept import AsyncAccept
from worker.state.keyspace import FirstSlot
from worker.state.records import Claimed, CompleteOptions
from worker.state.replication import Replication
from worker.state.store import Store

log = structlog.get_logger("optout.pipeline")

#: Chunks in a row whose requests all failed as a whole before a provider's circuit opens.
BREAKER_THRESHOLD = 3
#: The longest an open circuit holds a provider before the next probe.
BREAKER_CAP_SECONDS = 60.0
#: How long a process trusts its copy of the deployment's live targets.
DIRECTORY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    """A target of the deployment as an ops command sees it: its provider, whether it is
    live (some running process announces it), and whether this process has the provider's
    credentials (needed to probe it or read its list, not to look at or resume it)."""

    provider: str
    live: bool
    here: bool


class Dispatcher(Protocol):
    """Where pipeline work is sent: Celery in production, a direct call in unit tests."""

    def flush(self, target: str, action: Action, mode: str, delay: float = 0.0) -> None: ...

    def push(self, chunk_id: str, provider: str) -> None: ...


@dataclass
class Context:
    """What the pipeline functions need, built once per process and passed down."""

    settings: Settings
    store: Store
    providers: dict[str, Provider]
    dispatcher: Dispatcher
    rng: random.Random = field(default_factory=random.Random)
    own_numbers: frozenset[str] = frozenset()
    registered: bool = False
    #: The accept script from an event loop (the HTTP API); None: through a worker thread.
    async_accept: AsyncAccept | None = None
    #: Seconds for durations (the push chain, the directory's age); tests pass a fake.
    monotonic: Callable[[], float] = time.monotonic
    #: The audit archive (OPTOUT_ARCHIVE_URL); connects on first use.
    archive: Archive = field(default_factory=lambda: Archive("sqlite://"))
    #: (monotonic time, entries) of the last look at the audit backlog (accept's bound).
    backlog_seen: tuple[float, int] = (float("-inf"), 0)
    _announced: float = 0.0
    _directory: tuple[float, dict[str, dict[str, Any]]] | None = None

    def targets(self) -> dict[str, str]:
        """Every target of every provider this process has enabled -> its provider's name
        (what it announces; the deployment's live targets are in `directory`)."""
        return {t: name for name, p in self.providers.items() for t in p.targets()}

    def known_targets(self) -> list[str]:
        """Every target of the deployment (announced by any process, live or not), and this
        process's own: what status views and the SLA look at."""
        return sorted(set(self.store.known_targets()) | set(self.targets()))

    def deployment(self) -> dict[str, DeploymentTarget]:
        """Every target of the deployment (announced by any process, live or not) and this
        process's own: an ops command in another terminal sees what the workers registered,
        not only what its own environment enables."""
        own = self.targets()
        out = {
            target: DeploymentTarget(seen.provider, seen.live, seen.provider in self.providers)
            for target, seen in self.store.announced().items()
        }
        for target, provider in own.items():
            if target not in out:
                out[target] = DeploymentTarget(provider, live=False, here=True)
        return dict(sorted(out.items()))

    def route(self, source: str, action: Action, has_call: bool) -> dict[str, Any]:
        """Which providers an event from `source` goes to (accept.lua applies it to every
        live target): OPTOUT_ROUTES' includes (none: all) and excludes; `call`: the event
        carries a call record. A remove goes to every target, routes or not: the ledger
        holds one state per number, so a remove meant for one provider would unblock the
        number for all of them anyway (scrub, export), and any later push of it (a ledger
        change while in flight, a catch-up, reconcile) would carry the remove everywhere;
        staging drops it where it cannot apply (an add-only target)."""
        if action is Action.REMOVE:
            return {"include": [], "exclude": [], "call": True}
        rule = self.settings.routes.get(source) or {}
        return {
            "include": list(rule.get("include") or []),
            "exclude": list(rule.get("exclude") or []),
            "call": has_call,
        }

    def routed_by_any(
        self,
        sources: list[str],
        provider: str,
        table: dict[str, dict[str, list[str]]] | None = None,
    ) -> bool:
        """Whether an add from one of these sources is owed to `provider`: by `table`, the
        announced routes (Store.announced_routes, what target_state decides by: during a
        rolling change of OPTOUT_ROUTES this process's own may be the old ones), else by
        this process's own."""
        routes = self.settings.routes if table is None else table
        return any(routes_allow(routes, src, provider) for src in sources)

    def announce_due(self) -> bool:
        """This process has not announced its targets yet, or not for a third of their TTL
        (by the store's clock, which the TTL is kept in)."""
        ttl = self.settings.target_ttl_seconds
        return not self.registered or self.store.clock() - self._announced >= ttl / 3

    def ensure_registered(self, force: bool = False) -> None:
        """Announce this process's targets with their capabilities (register.lua): at first
        use and again before their TTL runs out. A target that becomes live (new, or back
        after no process had it for a TTL) is caught up from the ledger by the sweep."""
        if not force and not self.announce_due():
            return
        metas = {}
        for name, provider in self.providers.items():
            caps = provider.capabilities
            for target in provider.targets():
                metas[target] = {
                    "provider": name,
                    "add_only": not caps.supports_remove,
                    "needs_ctx": caps.needs_call_context,
                    "native_expiry": caps.supports_expiry,
                    "max_batch": caps.max_batch,
                    "one_list": caps.one_list,
                }
        registered = self.store.register_targets(
            metas, self.settings.target_ttl_seconds, self.settings.routes
        )
        if registered.routes == "changed":
            # Every live target catches up again: routes that keep changing (processes
            # whose OPTOUT_ROUTES differ) restart those catch-ups at every announcement.
            log.warning("routes_changed", routes=self.settings.routes)
        elif registered.routes == "new":
            log.info("routes_announced", routes=self.settings.routes)
        for live in registered.live:
            log.info("target_live", target=live.target, catch_up=live.catch_up)
        self.registered = True
        self._announced = self.store.clock()
        self._directory = None

    def directory(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The deployment's live targets -> their capabilities, as announced in Redis by
        every process (read at most every few seconds)."""
        now = self.monotonic()
        if refresh or self._directory is None or now - self._directory[0] >= DIRECTORY_SECONDS:
            self._directory = (now, self.store.directory())
        return self._directory[1]

    def target_meta(self, target: str) -> dict[str, Any] | None:
        """A live target's capabilities (this process's own, if it has the target)."""
        meta = self.directory().get(target)
        if meta is None:
            meta = self.directory(refresh=True).get(target)
        return meta

    def batch_size(self, target: str) -> int:
        meta = self.target_meta(target) or {}
        return min(self.settings.batch_size, int(meta.get("max_batch") or 100))

    def max_in_flight(self, provider: str) -> int:
        """Chunks one target may have leased at once: the provider's concurrency cap (more
        would only wait for a request slot), or with no cap two per worker process."""
        _, concurrency = self.settings.limits_for(provider)
        return concurrency if concurrency > 0 else 2 * self.settings.worker_concurrency

    def first_slot(self, providers: Iterable[str]) -> FirstSlot | None:
        """A push's first request slot, to take as its chunk is opened, for those of
        `providers` this process has that send a chunk in one request (a per-number
        provider's requests give their slots back at once: worker/pipeline/push.py)."""
        terms = {
            name: (*self.settings.limits_for(name), self.settings.slot_lease_seconds)
            for name in providers
            if (provider := self.providers.get(name)) is not None and provider.capabilities.bulk
        }
        return FirstSlot(uuid.uuid4().hex, terms, lease.FIRST_SLOT_SECONDS) if terms else None

    def replication(self) -> Replication | None:
        """How many replicas an accepted write must reach before it is answered."""
        replicas = self.settings.redis_wait_replicas
        return Replication(replicas, self.settings.redis_wait_timeout_ms) if replicas else None

    @property
    def late_ms(self) -> int:
        """How long after its push lost the chunk (recovered, or completed by another
        delivery of its task) a request may still land at the provider: every request
        renews the lease first, so one sent in time has a lease ahead of it; the margin is
        for a worker that stalls mid-request and for other hosts' clocks."""
        settings = self.settings
        return int((settings.lease_seconds + settings.http_timeout_seconds) * 1000)

    def complete_options(self, hold_seconds: float = 0.0) -> CompleteOptions:
        """How a chunk's failures are treated (settings, in the units the script reads)."""
        settings = self.settings
        return CompleteOptions(
            max_attempts=settings.max_attempts,
            backoff_base_ms=int(settings.retry_base_seconds * 1000),
            backoff_cap_ms=int(settings.retry_max_seconds * 1000),
            outage_budget_ms=int(settings.outage_budget_hours * 3_600_000),
            breaker_threshold=BREAKER_THRESHOLD,
            breaker_cap_ms=int(BREAKER_CAP_SECONDS * 1000),
            moved_retry_ms=int(settings.target_ttl_seconds * 1000),
            late_ms=self.late_ms,
            hold_ms=int(hold_seconds * 1000),
        )

    def claim(
        self, target: str, provider: str, action: Action, mode: str, max_chunks: int
    ) -> Claimed:
        """Lease staged numbers of one batch as chunks, within the target's in-flight cap."""
        options = self.claim_options(target, provider, mode, max_chunks, open_first=False)
        return self.store.claim(target, provider, action, **options)

    def claim_options(
        self, target: str, provider: str, mode: str, max_chunks: int, *, open_first: bool
    ) -> dict[str, Any]:
        """Store.claim's keyword arguments for a claim of this target's (`open_first`: see
        Store.claim_args)."""
        return {
            "size": self.batch_size(target),
            "lease_seconds": self.settings.lease_seconds,
            "mode": mode,
            "linger_ms": self.settings.batch_linger_ms,
            "max_chunks": max_chunks,
            "max_in_flight": self.max_in_flight(provider),
            "open_first": open_first,
        }
