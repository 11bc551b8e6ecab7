"""The pipeline as a hypothesis state machine: real Lua on a real Redis, a fake clock, model
providers (tests/simulation/models.py), and every operation a rule.

Invariants, checked after every step:
- a number in flight is in a chunk that exists, and every leased chunk exists;
- a confirmation claims what the provider holds: for a (target, number) confirmed as
  `{state}:{version}` with no request for it outstanding, the provider's list agrees
  (blocks a native-expiry provider has let expire count as lifted).
- every number's history (the archive and the Redis tail, merged) is every audit entry
  written for it, each once, newest first, whatever batches were archived, with the archive
  down or a drain cut short between its commit and its cleanup (at quiescence also read in
  pages of three, as the API's `before` pages it).
And at quiescence (`settle`: providers healed, every request answered, every task run, time
past every retry, expiry and lease, dead letters replayed, paused providers resumed):
- nothing is staged, in flight, retrying, dead-lettered, leased or unknown;
- every target's list equals the ledger for every number (an add-only target holds every
  number the ledger blocks with a call record), but for a dead letter purged since the
  number last changed;
- once the archive has drained, no number has an audit key left in Redis, and no row waits.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import anyio.to_thread
import redis
import redis.asyncio as aredis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from config import Settings, load_settings
from tests.real_redis import RealRedis
from tests.simulation.models import (
    ANSWERS,
    AUTH,
    LOST,
    OK,
    OUTAGE,
    PARTIAL,
    PERMANENT,
    Gate,
    Model,
    OneList,
    PushThread,
    Request,
    SimDispatcher,
    capabilities,
)
from worker.archive.archiver import archive_pending
from worker.archive.database import Archive, ArchiveError
from worker.archive.history import history
from worker.ops.reconcile import reconcile
from worker.pipeline import batching as work
from worker.pipeline import push as pushing
from worker.pipeline.accept import (
    AcceptError,
    Event,
    PhoneInput,
    StoreUnavailableError,
    accept,
    accept_async,
)
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.async_accept import AsyncAccept
from worker.state.store import Store

NUMBERS = [f"+97250000000{i}" for i in range(3)]  # few: races need numbers to collide
KINDS = ("bulk", "lookup", "addonly", "native", "onelist")
#: Steps beyond the core (accept, workers, leases running out, requests applied and
#: answered) that an example may use. Swarm testing: each example draws a profile, and one
#: that runs only a few kinds of step goes deeper into them.
OPTIONAL = ("lose", "redeliver", "kill", "reconcile", "toggle", "dead_letter", "old_api",
            "bad_answers", "expiry", "time", "beat", "one_task", "routes",
            "archive")  # fmt: skip
STORM = ("accept", "workers", "leases", "apply", "answer", "overtake", "late", "fails")
PROFILES = {
    "core": set(),
    "faults": {"lose", "redeliver", "kill", "bad_answers", "beat", "archive"},
    "ops": {
        "reconcile",
        "toggle",
        "dead_letter",
        "old_api",
        "expiry",
        "bad_answers",
        "beat",
        "routes",
        "archive",
    },
    "time": {"time", "expiry", "beat", "one_task", "bad_answers", "routes"},
    "everything": set(OPTIONAL),
}
FOREIGN = ["+972509999990", "+972509999991"]  # never in the ledger: put there by someone else
CALL = {"batchId": "b1", "requestUUID": "r1"}
UNKNOWN = "?"  # a confirmation: what the provider holds is unknown
ALL = "all"  # the full deployment; "nonative": the native provider's credentials removed
TTL = 60.0
LISTABLE = ("bulk", "lookup", "native", "onelist")
#: Where each source's adds go (OPTOUT_ROUTES); "sim" is routed everywhere. A remove goes to
#: every target whatever its source.
ROUTES = {
    "sms": {"include": ["bulk"], "exclude": []},
    "crm": {"include": [], "exclude": ["addonly", "lookup"]},
}
SOURCES = ["sim", "sim", "sms", "crm"]
#: The routes processes still on old settings have during a rolling change of OPTOUT_ROUTES.
#: Narrower than the new ones for some targets, wider for others.
OLD_ROUTES = {
    "sim": {"include": [], "exclude": ["native"]},
    "sms": {"include": ["lookup"], "exclude": []},
}


#: What the runs reached, printed after the hypothesis test (how deep the search goes).
STATS: Counter[str] = Counter()


class SimClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def sim_settings(prefix: str) -> Settings:
    settings = load_settings(
        {
            "REDIS_URL": "redis://unused.invalid:1/0",
            "OPTOUT_KEY_PREFIX": prefix,
            "OPTOUT_BATCH_LINGER_MS": "1000",
            "OPTOUT_LEASE_SECONDS": "120",
            "OPTOUT_HTTP_TIMEOUT_SECONDS": "15",
            "OPTOUT_RETRY_BASE_SECONDS": "1",
            "OPTOUT_RETRY_MAX_SECONDS": "8",
            "OPTOUT_MAX_ATTEMPTS": "3",
            "OPTOUT_TARGET_TTL_SECONDS": str(TTL),
            "OPTOUT_OUTAGE_BUDGET_HOURS": "1",
            "OPTOUT_IDEMPOTENCY_TTL_DAYS": "1",
        }
    )
    # The model providers' names are not real providers', which OPTOUT_ROUTES would refuse.
    return settings.model_copy(update={"routes": ROUTES})


async def _inline(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """anyio.to_thread.run_sync, without the thread."""
    return func(*args)


class PipelineMachine(RuleBasedStateMachine):
    """One deployment: worker and API processes (Pipelines on one store), model providers."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = SimClock()
        self.stepped_back = 0.0
        # Not `random`: hypothesis seeds it alike in every run, and two runs on one Redis
        # (CI beside a long run) would share a prefix.
        self.prefix = f"optout-sim-{uuid.uuid4().hex[:12]}:"
        self.redis = redis.Redis.from_url(RealRedis.url())
        self.settings = sim_settings(self.prefix)
        # Every number's whole audit trail: the quiescence check derives from it, not from
        # the ledger, which numbers each target should hold.
        self.store = Store(self.redis, prefix=self.prefix, clock=self.clock, audit_cap=100_000)
        # The audit archive every process shares, and every entry written (id -> number),
        # as seen in the stream before anything could take it away.
        self.archive = Archive("sqlite://")
        self.archive.migrate()
        self.archive_down = False
        self.written: dict[str, str] = {}
        self.gate = Gate()
        self.dispatcher = SimDispatcher()
        self.outstanding: list[Request] = []
        # Answered as failed (a timeout, a 5xx) but not applied: the provider may still be
        # working on them, and applies them, if ever, within the late window.
        self.limbo: list[Request] = []
        self._ids = 0
        self.models = {
            "bulk": Model(self, "bulk", ["bulk:a", "bulk:b"], capabilities("bulk")),
            "lookup": Model(self, "lookup", ["lookup"], capabilities("lookup"), lookup=True),
            "addonly": Model(self, "addonly", ["addonly"], capabilities("addonly")),
            "native": Model(self, "native", ["native"], capabilities("native")),
            "onelist": OneList(
                self, "onelist", ["onelist:a", "onelist:b"], capabilities("onelist")
            ),
        }
        # The one-list provider's database (its target) in the processes' settings; during
        # a rolling change of it, the old processes' database too (they announce it).
        self.db = "onelist:a"
        self.old_db: str | None = None
        # A rolling change of OPTOUT_ROUTES: the old processes route by OLD_ROUTES.
        self.old_routes = False
        self.kinds: set[str] = set(KINDS)
        self.numbers = list(NUMBERS)
        self.options: set[str] = set(OPTIONAL)
        self.mode = ALL
        self.processes: dict[str, Context] = {}
        self.purged: dict[tuple[str, str], str] = {}  # (target, number) -> ledger version
        self.log: list[str] = []
        self.events = 0
        self.async_clients: list[aredis.Redis] = []

    # -- the deployment --------------------------------------------------------------------

    def process(self, role: str) -> Context:
        """The pipeline of a process: 'worker', 'api', or 'api_old' or 'worker_old' (still
        on settings that lack the second bulk target, or name the one-list provider's old
        database, as during a rolling deploy)."""
        db = self.old_db if role.endswith("_old") and self.old_db else self.db
        old_routes = role.endswith("_old") and self.old_routes
        name = f"{role}:{self.mode}:{db}:{old_routes}"
        ctx = self.processes.get(name)
        if ctx is None:
            providers: dict[str, Any] = {
                k: m
                for k, m in self.models.items()
                if k in self.kinds and (self.mode == ALL or k != "native")
            }
            if role == "api_old" and "bulk" in providers:
                old = Model(self, "bulk", ["bulk:a"], capabilities("bulk"))
                old.lists = self.models["bulk"].lists
                providers["bulk"] = old
            if "onelist" in providers:
                one = self.models["onelist"]
                assert isinstance(one, OneList)
                providers["onelist"] = one.view(db)
            settings = self.settings
            if old_routes:
                settings = settings.model_copy(update={"routes": OLD_ROUTES})
            ctx = Context(
                settings=settings,
                store=self.store,
                providers=providers,
                dispatcher=self.dispatcher,
                rng=random.Random(len(self.processes)),
                monotonic=self.clock,
                archive=self.archive,
            )
            self.processes[name] = ctx
        return ctx

    @property
    def worker(self) -> Context:
        return self.process("worker")

    def clock_ms(self) -> int:
        return int(self.clock.now * 1000)

    def pass_time(self, seconds: float) -> None:
        self.note_lost_chunks()
        self.clock.now += seconds
        now = self.clock_ms()
        self.limbo = [r for r in self.limbo if r.can_land(now)]

    def unapplied(self) -> list[Request]:
        """Requests the provider may still apply: sent and not answered, or answered as
        failed while it may still be working on them."""
        return [r for r in self.outstanding if not r.applied] + [
            r for r in self.limbo if not r.applied and r.can_land(self.clock_ms())
        ]

    def recover_leases(self) -> int:
        recovered = work.recover(self.worker)
        self.note_lost_chunks()
        return recovered

    def note_lost_chunks(self) -> None:
        """A request whose push lost its chunk (recovered, or completed by another delivery
        of its task) is applied, if ever, within the pipeline's late window of that moment
        (see models). Called whenever a chunk may have gone and before time passes."""
        now = self.clock_ms()
        for request in self.outstanding:
            if request.deadline_ms is None and not self.redis.exists(
                self.store.key("chunk", request.chunk)
            ):
                request.deadline_ms = now + self.worker.late_ms

    def register(
        self, model: Model, target: str, kind: str, items: list[Any], **kw: Any
    ) -> Request:
        """A request a model was sent (from a push thread)."""
        self._ids += 1
        owner = self.gate.me()
        chunk = self.redis.hget(self.store.key("inflight", target), items[0].e164) or b""
        request = Request(self._ids, model, target, kind, items, owner, chunk=chunk.decode(), **kw)
        owner.touched.update((target, item.e164) for item in items)
        self.outstanding.append(request)
        return request

    def note(self, text: str) -> None:
        self.log.append(text)

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # a step failed: that is the report, not this
                self.check_quiescent()
        finally:
            self._clean_up()

    def _clean_up(self) -> None:
        try:
            for push in self.gate.alive():
                push.killed = True
                with self.gate.cond:
                    push.tokens += 1
                    self.gate.running += 1
                    self.gate.cond.notify_all()
            self.gate.wait_idle()
        finally:
            self.archive.close()
            keys = list(self.redis.scan_iter(match=self.prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                self.redis.delete(*keys[start : start + 500])

    @initialize(
        kinds=st.sets(st.sampled_from(KINDS), min_size=1),
        count=st.integers(1, len(NUMBERS)),
        profile=st.sampled_from(sorted(PROFILES)),
    )
    def choose(self, kinds: set[str], count: int, profile: str) -> None:
        """Which providers, how many numbers and which steps beyond the core this example
        uses."""
        self.kinds, self.numbers = set(kinds), NUMBERS[:count]
        self.options = set(PROFILES[profile])
        self.note(f"kinds {sorted(kinds)}, {count} numbers, profile {profile}")

    def on(self, option: str) -> bool:
        return option in self.options

    # -- rules: ingress ------------------------------------------------------------------------

    @rule(
        i=st.integers(0, len(NUMBERS) - 1),
        action=st.sampled_from([Action.ADD, Action.REMOVE]),
        offset=st.sampled_from([None, -30, -1, 0, 2]),
        expires=st.sampled_from([None, None, 5, 90]),
        call=st.booleans(),
        via=st.sampled_from(["api", "api", "api_old", "worker"]),
        source=st.sampled_from(SOURCES),
    )
    def accept_rule(
        self,
        i: int,
        action: Action,
        offset: int | None,
        expires: int | None,
        call: bool,
        via: str,
        source: str,
    ) -> None:
        if not self.on("expiry"):
            expires = None
        if not self.on("old_api") and via == "api_old":
            via = "api"
        if not self.on("routes"):
            source = "sim"
        n = self.numbers[i % len(self.numbers)]
        self.accept_event(n, action, offset, expires, call, via, source)

    @rule(
        picks=st.lists(
            st.tuples(
                st.integers(0, len(NUMBERS) - 1),
                st.sampled_from([Action.ADD, Action.REMOVE]),
                st.sampled_from([None, -30, -1, 0, 2]),
                st.booleans(),
            ),
            min_size=2,
            max_size=4,
        )
    )
    def accept_group(self, picks: list[tuple[int, Action, int | None, bool]]) -> None:
        """Events that reach the API together: one group, one call of the accept script
        (worker/state/async_accept.py), the same number maybe twice in it."""
        ctx = self.process("api")
        if ctx.async_accept is None:
            ctx.async_accept = AsyncAccept(self.store, self.async_client)
        # Announced now, so that the group takes the event loop's path (an event that finds
        # the targets due to be announced is accepted in a thread, alone).
        ctx.ensure_registered()
        events = [
            self.event_for(
                self.numbers[i % len(self.numbers)], action, offset, None, call, "sim", f"-g{k}"
            )
            for k, (i, action, offset, call) in enumerate(picks)
        ]

        async def together() -> list[Any]:
            try:
                return await asyncio.gather(*(accept_async(ctx, e) for e in events),
                                            return_exceptions=True)  # fmt: skip
            finally:
                # Each group has an event loop of its own: its client closes with it.
                while self.async_clients:
                    await self.async_clients.pop().aclose()

        # What accept_async hands to a thread (enqueueing flushes; an event that finds the
        # targets due to be announced) runs on the loop here, in the events' order: threads
        # would enqueue in any order, and the rules a run may take next (runnable tasks)
        # would differ from one replay of the same example to the next.
        with mock.patch.object(anyio.to_thread, "run_sync", _inline):
            results = asyncio.run(together())
        for event, result in zip(events, results, strict=True):
            if isinstance(result, AcceptError) and not isinstance(result, StoreUnavailableError):
                self.note(f"refused {result.reason} (in a group)")
            elif isinstance(result, BaseException):
                # This Redis never refuses a write (store unavailable): the group path failed.
                raise result
            else:
                what = f"{event.action.value} {str(event.phones[0].raw)[-1]}"
                self.note(f"accept {what} in a group of {len(events)}")

    def async_client(self) -> aredis.Redis:
        """A client for AsyncAccept (one an event loop), closed at the end of its group."""
        client = aredis.Redis.from_url(RealRedis.url())
        self.async_clients.append(client)
        return client

    def accept_event(
        self,
        n: str,
        action: Action,
        offset: int | None,
        expires: int | None,
        call: bool,
        via: str,
        source: str = "sim",
    ) -> None:
        event = self.event_for(n, action, offset, expires, call, source)
        try:
            accept(self.process(via), event)
            self.note(f"accept {action.value} {n[-1]} t{offset} x{expires} via {via} from {source}")
        except AcceptError as exc:
            self.note(f"refused {exc.reason}")

    def event_for(
        self,
        n: str,
        action: Action,
        offset: int | None,
        expires: int | None,
        call: bool,
        source: str,
        tag: str = "",
    ) -> Event:
        """`tag`: to tell apart events made at the same step (a group's)."""
        now = datetime.fromtimestamp(self.clock.now, tz=UTC)
        if not self.on("time"):
            # Without time steps every event is newer than the last: each one counts.
            self.events += 1
            offset = -600 + self.events
        occurred = None if offset is None else now + timedelta(seconds=offset)
        if action is Action.REMOVE:
            occurred = occurred or now
            expires = None
        return Event(
            source=source,
            action=action,
            phones=[PhoneInput(n)],
            reason=f"e{self._ids}-{len(self.log)}{tag}",
            occurred_at=occurred,
            expires_at=now + timedelta(seconds=expires) if expires else None,
            context=dict(CALL) if call else {},
        )

    # -- rules: Celery -------------------------------------------------------------------

    def runnable(self) -> list[int]:
        """Queued tasks a worker would take: a push for a provider no worker has enabled
        waits in its queue."""
        enabled = self.worker.providers
        return [
            i for i, task in enumerate(self.dispatcher.tasks)
            if task.kind == "flush" or task.args[1] in enabled
        ]  # fmt: skip

    @precondition(lambda self: self.on("one_task") and self.runnable())
    @rule(data=st.data())
    def run_task(self, data: st.DataObject) -> None:
        self.run_task_at(data.draw(st.sampled_from(self.runnable()), label="task"))

    @precondition(lambda self: self.runnable())
    @rule()
    def workers_catch_up(self) -> None:
        """Every queued task runs (the pushes they start park on their first request)."""
        for _ in range(50):
            ready = self.runnable()
            if not ready:
                return
            self.run_task_at(ready[0])

    @precondition(lambda self: self.redis.zcard(self.store.key("leases")) > 0)
    @rule()
    def leases_run_out(self) -> None:
        """Time passes beyond every lease (slow requests, a stalled worker); beat recovers
        the chunks and, a linger later, flushes what they gave back."""
        self.pass_time(self.settings.lease_seconds + 1)
        work.sweep(self.worker)
        self.recover_leases()
        self.tick()
        self.note("leases ran out; recovered")

    @precondition(lambda self: self.on("beat"))
    @rule()
    def tick(self) -> None:
        """A linger's worth of time with beat's sweep and lease recovery."""
        self.pass_time(self.settings.batch_linger_ms / 1000 + 0.1)
        if self.old_db is not None or self.old_routes:
            self.process("worker_old").ensure_registered()  # still running somewhere
        work.sweep(self.worker)
        self.recover_leases()
        self.note("tick")

    def start_push(self, chunk_id: str) -> PushThread:
        self.dispatcher.delivered.append(chunk_id)
        ctx = self.worker
        self.note(f"push chunk {chunk_id}")
        return self.gate.start(chunk_id, lambda: pushing.push(ctx, chunk_id))

    @precondition(lambda self: self.on("redeliver") and self.dispatcher.delivered)
    @rule(data=st.data())
    def redeliver_push(self, data: st.DataObject) -> None:
        """At-least-once: a push task delivered again (its first run may still be going)."""
        chunk_id = data.draw(st.sampled_from(self.dispatcher.delivered), label="chunk")
        self.start_push(chunk_id)

    @precondition(lambda self: self.on("lose") and self.dispatcher.tasks)
    @rule(data=st.data())
    def lose_task(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.dispatcher.tasks) - 1), label="task")
        task = self.dispatcher.tasks.pop(i)
        self.note(f"lost task {task.kind} {task.args}")

    # -- rules: providers ------------------------------------------------------------------

    @precondition(lambda self: self.unapplied())
    @rule(data=st.data())
    def apply_request(self, data: st.DataObject) -> None:
        waiting = self.unapplied()
        request = data.draw(st.sampled_from(waiting), label="request")
        request.model.apply(request)
        self.note(f"applied #{request.id} {request.kind} {request.target}")

    def overlapping(self) -> list[tuple[Request, Request]]:
        """Pairs of outstanding requests about the same number at the same target, the
        older first."""
        pairs = []
        for i, old in enumerate(self.outstanding):
            for new in self.outstanding[i + 1 :]:
                if old.target == new.target and set(old.numbers) & set(new.numbers):
                    pairs.append((old, new))
        return pairs

    @precondition(lambda self: self.overlapping())
    @rule(data=st.data())
    def overtake(self, data: st.DataObject) -> None:
        """Two pushes of the same number are out at once (a recovered chunk's, and the one
        that replaced it): the provider applies the newer first, then the older."""
        old, new = data.draw(st.sampled_from(self.overlapping()), label="requests")
        new.model.apply(new)
        old.model.apply(old)
        self.note(f"#{old.id} applied after #{new.id}")

    @rule(
        steps=st.lists(
            st.tuples(st.sampled_from(STORM), st.integers(0, 7), st.booleans()), max_size=40
        )
    )
    def storm(self, steps: list[tuple[str, int, bool]]) -> None:
        """A run of the core steps, each drawn uniformly (the rule-by-rule generation above
        turns rules off per example, which makes long races rare): accepts that flip the
        ledger, workers taking every task, leases running out, requests applied (the newer
        of two first) and answered, in any order."""
        for step, i, flag in steps:
            if step == "accept":
                n = self.numbers[i % len(self.numbers)]
                action = Action.ADD if flag else Action.REMOVE
                source = SOURCES[i % len(SOURCES)] if self.on("routes") else "sim"
                self.accept_event(n, action, None, None, i % 2 == 0, "api", source)
            elif step == "workers" and self.runnable():
                self.workers_catch_up()
            elif step == "leases" and self.redis.zcard(self.store.key("leases")):
                self.leases_run_out()
            elif step == "apply" and (waiting := self.unapplied()):
                request = waiting[i % len(waiting)]
                request.model.apply(request)
                self.note(f"applied #{request.id}")
            elif step == "answer" and self.outstanding:
                request = self.outstanding[i % len(self.outstanding)]
                request.model.apply(request)
                self.resolve(request, OK)
            elif step == "overtake" and (pairs := self.overlapping()):
                old, new = pairs[i % len(pairs)]
                new.model.apply(new)
                old.model.apply(old)
                self.note(f"#{old.id} applied after #{new.id}")
            elif step == "late" and (pairs := self.overlapping()):
                self.lands_late(*pairs[i % len(pairs)])
            elif step == "fails" and self.outstanding:
                # Applied, and then the answer is lost, or a 5xx (a proxy's, say).
                request = self.outstanding[i % len(self.outstanding)]
                request.model.apply(request)
                self.resolve(request, LOST if flag else OUTAGE)
            self.check_invariants_now()

    def lands_late(self, old: Request, new: Request) -> None:
        """The provider applies a newer push, then an older one still out for the same
        number (a recovered chunk's slow request); the older's answer arrives first."""
        new.model.apply(new)
        old.model.apply(old)
        self.note(f"#{old.id} landed after #{new.id}")
        self.resolve(old, OK)
        if new in self.outstanding:
            self.resolve(new, OK)

    @precondition(lambda self: self.overlapping())
    @rule(data=st.data())
    def late_landing(self, data: st.DataObject) -> None:
        self.lands_late(*data.draw(st.sampled_from(self.overlapping()), label="requests"))

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data(), answer=st.sampled_from([OK, OK, OK, *ANSWERS]))
    def answer_request(self, data: st.DataObject, answer: str) -> None:
        request = data.draw(st.sampled_from(self.outstanding), label="request")
        if not self.on("bad_answers"):
            # Every answer a success: outages hold the provider, and an example without
            # them explores the orders in which pushes land instead.
            answer = OK
        bulk = request.model.capabilities.bulk
        if request.applied and (answer in (AUTH, PERMANENT) or (answer == PARTIAL and not bulk)):
            answer = OK  # a refused request changed nothing: this one was applied
        if answer == PARTIAL and bulk and not request.applied:
            # One number failed inside an answer that applied the others.
            request.failed = data.draw(st.sampled_from(request.numbers), label="failed")
        if answer == OK or (answer == PARTIAL and bulk):
            request.model.apply(request)
        if answer == LOST and data.draw(st.booleans(), label="applied before the timeout"):
            request.model.apply(request)
        self.resolve(request, answer)

    def resolve(self, request: Request, answer: str) -> None:
        if (
            answer in (OK, PARTIAL)
            and not request.applied
            and not request.can_land(self.clock_ms())
        ):
            answer = LOST  # too late to be applied: its sender times out
        self.outstanding.remove(request)
        request.answer = answer
        if answer in (OUTAGE, LOST) and not request.applied:
            until = self.clock_ms() + self.worker.late_ms
            request.deadline_ms = min(request.deadline_ms or until, until)
            self.limbo.append(request)
        self.note(f"answered #{request.id} {answer}")
        if not request.owner.done:
            self.gate.wake(request.owner)

    @precondition(lambda self: self.on("kill") and self.gate.alive())
    @rule(data=st.data())
    def kill_worker(self, data: st.DataObject) -> None:
        """kill -9 a worker mid-push. What it had sent is applied or not, now, if it still
        can be (see models)."""
        push = data.draw(st.sampled_from(self.gate.alive()), label="push")
        self.note_lost_chunks()
        for request in [r for r in self.outstanding if r.owner is push]:
            if request.can_land(self.clock_ms()) and data.draw(st.booleans(), label="applied"):
                request.model.apply(request)
        self.kill(push)

    def kill(self, push: PushThread) -> None:
        """The push's worker dies: what it had sent and was not applied never will be."""
        for request in [r for r in self.outstanding if r.owner is push]:
            self.outstanding.remove(request)
        push.killed = True
        self.note(f"killed {push.name}")
        self.gate.wake(push)

    @precondition(lambda self: self.on("old_api"))
    @rule(data=st.data())
    def confirmation_written_the_old_way(self, data: st.DataObject) -> None:
        """A release that kept confirmations in `confirmed:{target}` wrote this one (a
        rolling upgrade): the same word, where the ledger's newer code must still read it
        first, and the sweep moves it back (Store.move_confirmations)."""
        held = [(t, n, c) for t in self.all_targets() for n, c in self.confirmations(t).items()]
        if not held:
            return
        target, n, claim = data.draw(st.sampled_from(sorted(held)))
        field = self.store.confirmation_field(target)
        assert field is not None
        self.redis.hdel(self.store.key("num", n), field)
        self.redis.hset(self.store.key("confirmed", target), n, claim)
        self.note(f"confirmation of {n} at {target} written the old way: {claim}")

    @precondition(lambda self: self.store.paused())
    @rule()
    def resume_providers(self) -> None:
        for provider in list(self.store.paused()):
            self.store.resume(provider)
            for target in self.models[provider].targets():
                for action in Action:
                    self.dispatcher.flush(target, action, work.ALL)
        self.note("resumed")

    # -- rules: beat, time, ops ------------------------------------------------------------

    @precondition(lambda self: self.on("time"))
    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0, 30.0, 130.0]))
    def advance(self, seconds: float) -> None:
        self.pass_time(seconds)
        self.note(f"+{seconds}s")

    @precondition(lambda self: self.on("time"))
    @rule(seconds=st.sampled_from([1.0, 30.0, 700.0]))
    def clock_steps_back(self, seconds: float) -> None:
        """The server's clock steps back (a failover to a replica whose clock lags): a
        target seen lapsed must still be caught up when it is announced again."""
        self.pass_time(-seconds)
        self.stepped_back += seconds
        self.note(f"-{seconds}s")

    @precondition(lambda self: self.on("beat"))
    @rule()
    def sweep(self) -> None:
        work.sweep(self.worker)
        self.note("sweep")

    @precondition(lambda self: self.on("beat"))
    @rule()
    def recover(self) -> None:
        recovered = self.recover_leases()
        self.note(f"recover {recovered}")

    @precondition(lambda self: self.on("dead_letter") and self.redis.hlen(self.store.key("dlq")))
    @rule(data=st.data(), purge=st.booleans())
    def dead_letter(self, data: st.DataObject, purge: bool) -> None:
        ids = sorted(d["id"] for d in self.store.dead_letters())
        chosen = data.draw(st.sampled_from(ids), label="dead letter")
        if purge:
            target, _, n = chosen.partition("|")
            self.purged[(target, n)] = self.store.ledger(n).get("v", "")
            self.store.purge([chosen], "sim")
        else:
            work.replay(self.worker, [chosen], "sim")
        self.note(f"{'purge' if purge else 'replay'} {chosen}")

    @precondition(lambda self: self.on("reconcile") and "bulk" in self.kinds)
    @rule(
        remove_extras=st.booleans(),
        racing=st.one_of(st.none(), st.tuples(st.sampled_from(NUMBERS), st.booleans())),
        foreign=st.sampled_from([None, *FOREIGN]),
    )
    def reconcile(
        self, remove_extras: bool, racing: tuple[str, bool] | None, foreign: str | None
    ) -> None:
        """Reconcile the listable providers, maybe with someone else's number on one list
        and an accept landing between the listing and the repair."""
        if foreign is not None:
            self.models["bulk"].lists["bulk:a"].setdefault(foreign, _foreign_entry())
        if racing is not None:
            n, add = racing

            def race() -> None:
                self.accept_event(n, Action.ADD if add else Action.REMOVE, 0, None, False, "api")

            self.models["bulk"].listing_hook = race
        reconcile(self.worker, remove_extras=remove_extras)
        self.models["bulk"].listing_hook = None
        self.note(f"reconcile extras={remove_extras} racing={racing} foreign={foreign}")

    @precondition(lambda self: self.on("toggle") and "native" in self.kinds)
    @rule()
    def disable_native(self) -> None:
        """The native provider's credentials are removed from every process."""
        self.mode = "nonative"
        self.note("native disabled")

    @precondition(lambda self: self.mode != ALL)
    @rule()
    def enable_native(self) -> None:
        self.mode = ALL
        self.note("native enabled")

    @precondition(lambda self: self.on("toggle") and "onelist" in self.kinds and not self.old_db)
    @rule()
    def change_database(self) -> None:
        """A rolling change of the one-list provider's database: new processes announce
        the other one while the old ones still run."""
        self.old_db = self.db
        self.db = "onelist:b" if self.db == "onelist:a" else "onelist:a"
        self.worker.ensure_registered(force=True)
        self.note(f"database {self.old_db} -> {self.db}")

    @precondition(lambda self: self.on("toggle") and self.on("routes") and not self.old_routes)
    @rule()
    def change_routes(self) -> None:
        """A rolling change of OPTOUT_ROUTES: the old processes (an API, a worker) still
        route by the old ones, and each announcement of theirs or of a new process's puts
        its own routes in force."""
        self.old_routes = True
        self.note("routes: old and new")

    @precondition(lambda self: self.old_routes)
    @rule(new=st.booleans())
    def announce_routes(self, new: bool) -> None:
        self.process("worker" if new else "worker_old").ensure_registered(force=True)
        self.note(f"announced {'new' if new else 'old'} routes")

    @precondition(lambda self: self.old_routes)
    @rule()
    def routes_changed(self) -> None:
        """The rolling change of OPTOUT_ROUTES ends."""
        self.old_routes = False
        self.worker.ensure_registered(force=True)
        self.note("routes: new only")

    @precondition(lambda self: self.old_db is not None)
    @rule()
    def old_processes_stop(self) -> None:
        """The rolling change ends: the old database's target lapses a TTL later."""
        self.note(f"{self.old_db} no longer announced")
        self.old_db = None

    # -- rules: the audit archive -------------------------------------------------------------

    def note_written(self) -> None:
        """Every entry in the stream now: entries leave it only when archived (below)."""
        for entry in self.store.pending_audit(100_000):
            self.written.setdefault(entry.entry_id, entry.number)

    @precondition(lambda self: self.on("archive"))
    @rule(size=st.sampled_from([1, 3, 1000]), crash=st.booleans())
    def archive_a_batch(self, size: int, crash: bool) -> None:
        """A drain of the oldest `size` entries; `crash`: the worker dies after the archive
        committed, before Redis forgot them (the next drain inserts them again)."""
        self.note_written()
        batch = self.store.pending_audit(size)
        try:
            if self.archive_down:
                raise ArchiveError("archive unavailable: the simulation's outage")
            self.archive.write(batch)
        except ArchiveError:
            self.note(f"archive down: {len(batch)} entries wait")
            return
        if not crash:
            self.store.forget_archived(batch)
        self.note(f"archived {len(batch)}{' (crashed before cleanup)' if crash else ''}")
        if crash:
            STATS["a drain cut short between commit and cleanup"] += 1

    @precondition(lambda self: self.on("archive"))
    @rule()
    def archive_goes_down_or_returns(self) -> None:
        self.archive_down = not self.archive_down
        self.note(f"archive {'down' if self.archive_down else 'back'}")

    def drain_archive(self) -> None:
        self.archive_down = False
        self.note_written()
        while archive_pending(self.worker):
            pass

    def audit_of(self, n: str) -> list[dict[str, Any]]:
        """A number's whole audit history, the archive's and the Redis tail's, each once."""
        return [e.raw for e in history(self.worker, n, 1_000_000).entries]

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def every_audit_entry_is_in_the_archive_or_the_tail_once(self) -> None:
        if self.on("archive"):
            self.check_audit_complete()

    def check_audit_complete(self, page: int = 1_000_000) -> None:
        """Every number's history, read `page` entries a page (as the API's `before` pages
        it), is every entry written for it, each once, newest first."""
        self.note_written()
        for n in NUMBERS + FOREIGN:
            keys = self.history_keys(n, page)
            ids = [entry_id for *_, entry_id in keys]
            assert len(ids) == len(set(ids)), (n, ids)
            assert set(ids) == {i for i, m in self.written.items() if m == n}, (n, self.log[-30:])
            assert keys == sorted(keys, reverse=True), (n, keys)

    def history_keys(self, n: str, page: int) -> list[tuple[int, int, str]]:
        keys: list[tuple[int, int, str]] = []
        before = None
        while True:
            found = history(self.worker, n, page, before)
            keys += [e.key for e in found.entries]
            if found.next_before is None:
                return keys
            before = found.next_before

    @invariant()
    def count_what_was_reached(self) -> None:
        for target in self.all_targets():
            if self.redis.hlen(self.store.key("unknown", target)):
                STATS["a push overtaken by a recovered chunk's late answer"] += 1
            if self.redis.exists(self.store.key("breaker", target.split(":")[0])):
                STATS["a circuit failing or open"] += 1
        if len(self.gate.alive()) >= 2:
            STATS["two pushes in flight at once"] += 1
        if self.overlapping():
            STATS["two requests out for one number"] += 1
        backfills = self.store.backfills()
        if backfills:
            STATS["a target catching up"] += 1
        if any(cursor.endswith("!") for cursor in backfills.values()):
            STATS["a target new to the deployment catching up (no ledger pass)"] += 1
        if self.old_db is not None:
            STATS["a rolling change of the one-list database"] += 1
        if self.old_routes:
            STATS["a rolling change of the routes"] += 1
        one = self.models["onelist"]
        if isinstance(one, OneList) and one.moves[0]:
            STATS["an entry moved between databases"] += 1

    @invariant()
    def in_flight_numbers_have_their_chunk(self) -> None:
        for target in self.all_targets():
            owners = self.redis.hgetall(self.store.key("inflight", target))
            for n, chunk_id in owners.items():
                key = self.store.key("chunk", chunk_id.decode())
                assert self.redis.exists(key), (target, n, chunk_id, self.log[-30:])
        for chunk_id in self.redis.zrange(self.store.key("leases"), 0, -1):
            assert self.redis.exists(self.store.key("chunk", chunk_id.decode())), chunk_id

    @invariant()
    def confirmations_claim_what_the_provider_holds(self) -> None:
        # Not yet for numbers a push is still working on: in flight (its chunk, or a dead
        # worker's until recovery), or sent by a push that has not completed.
        now = self.clock_ms()
        # At a one-list provider, also for numbers a push to another of its targets is
        # working on: its add may move the entry, its delete remove it, before it knows.
        busy = {pair for push in self.gate.alive() for pair in push.touched}
        in_flight = {
            (t, n.decode())
            for t in self.all_targets()
            for n in self.redis.hkeys(self.store.key("inflight", t))
        }
        for target in self.all_targets():
            model = self.model_of(target)
            others = [t for t in model.targets() if t != target and model.capabilities.one_list]
            for n, claim in self.confirmations(target).items():
                if claim == "?" or n in FOREIGN:
                    continue  # (someone else puts foreign numbers there behind our back)
                if any((t, n) in busy or (t, n) in in_flight for t in [target, *others]):
                    continue
                state = claim.partition(":")[0]
                held = model.holds(target, n, now)
                if model.capabilities.supports_remove:
                    ok = held == (state == "blocked")
                    if not ok and not held and model.capabilities.supports_expiry:
                        ok = model.entry(target, n) is not None  # expired by itself: lifted on time
                else:
                    ok = held or state != "blocked"
                assert ok, (target, n, claim, held, self.log[-40:])

    # -- for the named cases -----------------------------------------------------------------

    def pending(self, target: str, kind: str | None = None) -> Request:
        """The oldest outstanding request to a target (of a kind)."""
        return next(r for r in self.outstanding if r.target == target and kind in (None, r.kind))

    def answer_all(self, answer: str = OK) -> None:
        while self.outstanding:
            request = self.outstanding[0]
            if answer == OK:
                request.model.apply(request)
            self.resolve(request, answer)

    def check_invariants_now(self) -> None:
        self.in_flight_numbers_have_their_chunk()
        self.confirmations_claim_what_the_provider_holds()

    # -- quiescence ----------------------------------------------------------------------------

    def given_up(self, target: str, n: str) -> bool:
        """An operator purged its dead letter, and the number has not changed since."""
        return self.purged.get((target, n)) == self.store.ledger(n).get("v", "")

    def confirmations(self, target: str) -> dict[str, str]:
        """Every number the target has a confirmation for -> that confirmation."""
        found: dict[str, str] = {}
        cursor = "0"
        while True:
            cursor, numbers = self.store.confirmed_page(target, cursor, 500)
            claims = self.store.confirmations(target, numbers)
            found.update({n: c for n, c in zip(numbers, claims, strict=True) if c})
            if cursor == "0":
                return found

    def all_targets(self) -> list[str]:
        return [t for k, m in self.models.items() if k in self.kinds for t in m.targets()]

    def model_of(self, target: str) -> Model:
        return self.models[target.split(":", 1)[0]]

    def settle(self) -> None:
        """Heal everything and run the deployment until nothing is left to do."""
        self.mode = ALL
        self.old_db = None  # a rolling change completes
        if self.old_routes:
            self.routes_changed()
        for _ in range(100):
            for _ in range(2000):
                if self.outstanding:
                    request = self.outstanding[0]
                    request.model.apply(request)
                    self.resolve(request, OK)
                elif self.runnable():
                    self.run_task_at(self.runnable()[0])
                else:
                    break
            if self.store.paused():
                self.resume_providers()
                continue
            live = self.store.directory()
            dead = [d["id"] for d in self.store.dead_letters() if d["target"] in live]
            replay = [i for i in dead if not self.given_up(*i.split("|", 1))]
            if replay:
                work.replay(self.worker, replay, "settle")
            elif self.idle():
                return
            self.pass_time(10)
            work.sweep(self.worker)
            self.recover_leases()
        raise AssertionError(f"did not settle: {self.busy()} {self.log[-60:]}")

    def run_task_at(self, i: int) -> None:
        task = self.dispatcher.tasks.pop(i)
        if task.kind == "flush":
            target, action, mode = task.args
            work.flush(self.worker, target, action, mode)
            self.note(f"flush {target} {action.value} {mode}")
        else:
            self.start_push(task.args[0])

    def busy(self) -> dict[str, Any]:
        counts = self.store.counts(self.all_targets())
        return {
            "counts": {t: c for t, c in counts.items() if any(c.values())},
            "retry": self.redis.zcard(self.store.key("retry")),
            "leases": self.redis.zcard(self.store.key("leases")),
            "backfill": self.store.backfills(),
            "threads": len(self.gate.alive()),
            "expiry": self.redis.zcard(self.store.key("expiry")),
        }

    def idle(self) -> bool:
        b = self.busy()
        return not (b["counts"] or b["retry"] or b["leases"] or b["backfill"] or b["threads"])

    def check_quiescent(self) -> None:
        # Past every temporary block, so that expiries have been processed too, and past
        # where the clock was before it stepped back (leases and retries wait for that),
        # with beat running: a target that lapsed here would be caught up from the ledger,
        # which would repair, and hide, a number the pipeline failed to stage.
        for _ in range(int((200 + self.stepped_back) // 10)):
            self.pass_time(10)
            work.sweep(self.worker)
        self.stepped_back = 0.0
        for _ in range(3):
            work.sweep(self.worker)
            self.settle()
        assert self.idle(), self.busy()
        # (A dead letter of a database a rolling change left waits for it, or an operator.)
        live = self.store.directory()
        for d in self.store.dead_letters():
            assert d["target"] not in live or self.given_up(d["target"], d["phone"]), d
        # Our numbers first, before anything could repair them: a reconcile here would push
        # again what the pipeline lost and hide it.
        self.lists_equal_the_ledger(NUMBERS)
        reconcile(self.worker, remove_extras=True)  # someone else's numbers come off
        self.settle()
        assert self.idle(), self.busy()
        self.lists_equal_the_ledger(NUMBERS + FOREIGN)
        # Everything archived: every entry once (read whole, and in pages of a few), and no
        # number keeps an audit key in Redis.
        self.check_audit_complete(page=3)
        self.drain_archive()
        self.check_audit_complete()
        self.check_audit_complete(page=3)
        shared = {self.store.key("audit", k).encode() for k in ("log", "batches", "rows")}
        left = [k for k in self.redis.scan_iter(match=self.store.key("audit", "*"))
                if k not in shared]  # fmt: skip
        assert not left, left
        assert self.store.audit_backlog().entries == 0, self.store.audit_backlog()

    def owed(self, n: str, provider: str | None) -> bool:
        """Whether `provider` (None: any) should hold the number now, by the events
        accepted for it (their audit entries, with the times accept took): an add from a
        source routed there, not lifted by a newer remove (on a tie the add wins), not run
        out. Independent of the ledger's own bookkeeping of blocks and their sources."""
        now = self.clock_ms()
        events = [
            e for e in self.audit_of(n)
            if e.get("act") in ("add", "remove") and "prov" not in e  # not a push's answer
        ]  # fmt: skip
        lifted = max((int(e["t"]) for e in events if e["act"] == "remove"), default=-1)
        return any(
            e["act"] == "add"
            and int(e["t"]) >= lifted
            and (not e.get("x") or int(e["x"]) > now)
            and (provider is None or provider in self.settings.routed(e["src"], [provider]))
            for e in events
        )

    def lists_equal_the_ledger(self, numbers: list[str]) -> None:
        """Every target's list equals the ledger for these numbers, and nothing about them
        is left unknown (a target that can remove)."""
        now = self.clock_ms()
        for n in numbers:
            blocked = self.store.ledger(n).get("s") == "blocked"
            assert blocked == self.owed(n, None), (n, self.store.ledger(n), self.log[-60:])
        live = self.store.directory()
        for target in self.all_targets():
            model = self.model_of(target)
            if model.capabilities.one_list and target not in live:
                continue  # a database no process names any more: nobody's list
            assert not self.redis.hlen(self.store.key("unknown", target)), target
            confirmed = self.confirmations(target)
            for n in numbers:
                ledger = self.store.ledger(n)
                blocked = self.owed(n, model.name)
                if self.given_up(target, n):
                    continue
                held = model.holds(target, n, now)
                if model.capabilities.supports_remove:
                    assert held == blocked, (target, n, ledger, held, self.log[-60:])
                    assert confirmed.get(n) != UNKNOWN, (target, n)
                elif blocked and ledger.get("c"):
                    assert held, (target, n, ledger, self.log[-60:])


def _foreign_entry() -> Any:
    from tests.simulation.models import Entry

    return Entry(10_000 + len(FOREIGN))
