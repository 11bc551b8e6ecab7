"""Model providers for the pipeline simulation: each request is applied at the provider and
answered at moments the simulation chooses, one step at a time.

A push runs in a thread of its own (`Gate.start`), exactly the production code
(`worker.pipeline.push.push`) down to `Provider.push`. There a model registers its requests and
parks the thread until the simulation resolves one; the simulation waits until every push
thread has parked again or finished before its next step, so runs are deterministic.

The timing the pipeline relies on, and which the models keep: a provider applies a request,
if ever, before its answer reaches the sender, and no later than the pipeline's late window
(`Context.late_ms`: a lease and an HTTP timeout) after the sender's push lost its chunk (it
was recovered, or another delivery of the task completed it). Until then it may land at
any moment, after newer pushes, and its sender may die without an answer.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.domain.phones import NumberFormat
from worker.pipeline import lease
from worker.pipeline.lease import LeaseLostError
from worker.providers.base import Action, Capabilities, NumberResult, Outcome, PushItem
from worker.providers.errors import AuthError, PermanentError, PushInterrupted, RetryableError

#: How the simulation answers a request.
OK, OUTAGE, LOST, AUTH, PARTIAL, PERMANENT = "ok", "outage", "lost", "auth", "partial", "permanent"
ANSWERS = (OK, OUTAGE, LOST, AUTH, PARTIAL, PERMANENT)


class Killed(BaseException):
    """Raised in a push thread whose worker the simulation killed: nothing after runs."""


@dataclass
class Entry:
    """One number on a model provider's list."""

    id: int
    expires_ms: int = 0  # 0: permanent (native-expiry models only)
    target: str = ""  # one-list models: the database (target) that holds it


@dataclass
class Request:
    """One request a model provider has been sent and not yet answered."""

    id: int
    model: Model
    target: str
    kind: str  # add | remove | lookup | delete
    items: list[PushItem]
    owner: PushThread
    chunk: str = ""  # the chunk it was sent for
    entry_id: int | None = None  # delete, put: the id the lookup found
    applied: bool = False
    found: int | None = None  # lookup: the id it saw when applied
    found_in: str = ""  # one-list find: the target the entry was in; put: where it was
    found_expires: int = 0  # one-list find: the entry's expiry
    answer: str | None = None
    failed: str = ""  # partial: the number answered as failed
    deadline_ms: int | None = None  # applied no later than this (its push lost the chunk)

    def can_land(self, now_ms: int) -> bool:
        return self.deadline_ms is None or now_ms <= self.deadline_ms

    @property
    def numbers(self) -> list[str]:
        return [item.e164 for item in self.items]

    def __repr__(self) -> str:
        numbers = ",".join(n[-1] for n in self.numbers)
        return f"#{self.id} {self.kind} {self.target} [{numbers}] chunk {self.chunk}"


class PushThread:
    """A push task running in a worker: a thread that runs until it parks or finishes."""

    def __init__(self, gate: Gate, name: str, chunk_id: str) -> None:
        self.gate = gate
        self.name = name
        self.chunk_id = chunk_id
        self.tokens = 0
        self.killed = False
        self.done = False
        self.thread: threading.Thread | None = None
        self.touched: set[tuple[str, str]] = set()  # (target, number) it sent requests for

    def park(self) -> None:
        """Wait (in this thread) until the simulation hands control back."""
        gate = self.gate
        with gate.cond:
            gate.running -= 1
            gate.cond.notify_all()
            gate.cond.wait_for(lambda: self.tokens > 0)
            self.tokens -= 1
        if self.killed:
            raise Killed


class Gate:
    """Hands control between the simulation and the push threads, one at a time."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.running = 0
        self.errors: list[BaseException] = []
        self.threads: list[PushThread] = []
        self.current = threading.local()

    def start(self, chunk_id: str, run: Callable[[], Any]) -> PushThread:
        push = PushThread(self, f"push-{len(self.threads)}", chunk_id)

        def body() -> None:
            self.current.push = push
            try:
                run()
            except Killed:
                pass
            except BaseException as exc:  # noqa: BLE001 (reported to the simulation)
                self.errors.append(exc)
            finally:
                with self.cond:
                    push.done = True
                    self.running -= 1
                    self.cond.notify_all()

        with self.cond:
            self.running += 1
        push.thread = threading.Thread(target=body, name=push.name, daemon=True)
        self.threads.append(push)
        push.thread.start()
        self.wait_idle()
        return push

    def wake(self, push: PushThread) -> None:
        """Let a parked push thread run until it parks again or finishes."""
        with self.cond:
            push.tokens += 1
            self.running += 1
            self.cond.notify_all()
        self.wait_idle()

    def wait_idle(self) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.running == 0, timeout=30):
                raise RuntimeError("a push thread neither parked nor finished within 30 s")
        if self.errors:
            raise self.errors.pop(0)

    def me(self) -> PushThread:
        push: PushThread = self.current.push
        return push

    def alive(self) -> list[PushThread]:
        return [t for t in self.threads if not t.done]


class Model:
    """A provider whose list the simulation can read, with requests it resolves. Kinds:
    bulk (one request per chunk, like Voicenter or Phonely), lookup (one request per number;
    a remove looks the number up and deletes it by id, like VoodooSMS), add-only (no remove,
    needs a call record, like Weya) and native (per number, blocks expire by themselves,
    like Daktela)."""

    def __init__(
        self,
        sim: Any,
        name: str,
        targets: list[str],
        capabilities: Capabilities,
        *,
        lookup: bool = False,
    ) -> None:
        self.sim = sim
        self.name = name
        self._targets = targets
        self.capabilities = capabilities
        self.lookup = lookup
        self.lists: dict[str, dict[str, Entry]] = {t: {} for t in targets}
        self.adds: dict[tuple[str, str], int] = {}  # successful adds per (target, number)
        self.sent: dict[tuple[str, str, str], int] = {}  # requests per (target, number, kind)
        self.listing_hook: Callable[[], None] | None = None
        self._ids = itertools.count(1)

    def targets(self) -> list[str]:
        return list(self._targets)

    def probe(self) -> None:
        return None

    def entry(self, target: str, n: str) -> Entry | None:
        return self.lists[target].get(n)

    def holds(self, target: str, n: str, now_ms: int) -> bool:
        entry = self.entry(target, n)
        if entry is None:
            return False
        return not (self.capabilities.supports_expiry and entry.expires_ms
                    and entry.expires_ms <= now_ms)  # fmt: skip

    # -- what a request does at the provider ------------------------------------------------

    def apply(self, request: Request) -> None:
        if request.applied or not request.can_land(self.sim.clock_ms()):
            return
        request.applied = True
        held = self.lists[request.target]
        for item in request.items:
            n = item.e164
            if request.failed == n:
                continue
            if request.kind == "add":
                entry = held.get(n)
                if entry is None:
                    held[n] = Entry(next(self._ids), item.expires_ms)
                    key = (request.target, n)
                    self.adds[key] = self.adds.get(key, 0) + 1
                elif self.capabilities.supports_expiry:
                    entry.expires_ms = item.expires_ms  # the adapter corrects the expiry
            elif request.kind == "remove":
                held.pop(n, None)
            elif request.kind == "lookup":
                entry = held.get(n)
                request.found = entry.id if entry else None
            elif request.kind == "delete":
                entry = held.get(n)
                if entry is not None and entry.id == request.entry_id:
                    del held[n]
                    request.found = entry.id
                else:
                    request.found = None  # the id is gone: "invalid id"

    # -- the push, in a push thread -----------------------------------------------------

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        if self.capabilities.bulk:
            return self._bulk(target, action, items)
        return self._per_number(target, action, items)

    def _send(self, target: str, kind: str, items: list[PushItem], **kw: Any) -> Request:
        lease.renew()  # what worker/providers/http.py does before every request
        for item in items:
            key = (target, item.e164, kind)
            self.sent[key] = self.sent.get(key, 0) + 1
        return self.sim.register(self, target, kind, items, **kw)

    def _bulk(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        request = self._send(target, action.value, items)
        push = self.sim.gate.me()
        while request.answer is None:
            push.park()
        answer = request.answer
        if answer == OUTAGE:
            raise RetryableError("http_503", "model outage", outage=True)
        if answer == LOST:
            raise RetryableError("timeout", "model timeout", outage=True)
        if answer == AUTH:
            raise AuthError("http_401", "model refused", setting="MODEL_KEY")
        if answer == PERMANENT:
            raise PermanentError("rejected", "model rejected the chunk")
        results = {n: NumberResult(Outcome.DONE) for n in request.numbers}
        if answer == PARTIAL:
            results[request.failed] = NumberResult(Outcome.RETRY, "provider_internal_error")
        return results

    def _per_number(
        self, target: str, action: Action, items: list[PushItem]
    ) -> dict[str, NumberResult]:
        push = self.sim.gate.me()
        results: dict[str, NumberResult] = {}
        pending: list[Request] = []
        stopped: Exception | None = None
        kind = self.first_kind(action)
        waiting = list(items)  # `concurrency` requests out at once, like the fan-out
        while pending or (waiting and stopped is None):
            while waiting and stopped is None and len(pending) < self.capabilities.concurrency:
                try:
                    pending.append(self._send(target, kind, [waiting.pop(0)]))
                except LeaseLostError as exc:
                    stopped = exc
            if not pending:
                break
            answered = [r for r in pending if r.answer is not None]
            if not answered:
                push.park()
                continue
            for request in answered:
                pending.remove(request)
                outcome = self._one(request, stopped is not None)
                if isinstance(outcome, Exception):
                    stopped = stopped or outcome
                elif isinstance(outcome, Request):
                    pending.append(outcome)
                elif outcome is not None:
                    results[request.numbers[0]] = outcome
        if stopped is not None:
            raise PushInterrupted(stopped, results)
        return results

    def first_kind(self, action: Action) -> str:
        return "lookup" if action is Action.REMOVE and self.lookup else action.value

    def _one(self, request: Request, stopping: bool) -> NumberResult | Request | Exception | None:
        """One per-number request's answer: a result, the next request (a lookup's delete;
        none once the push is stopping), or why the push stops."""
        answer = request.answer
        if answer == AUTH:
            return AuthError("http_401", "model refused", setting="MODEL_KEY")
        if answer in (OUTAGE, LOST):
            reason = "http_503" if answer == OUTAGE else "timeout"
            return NumberResult(Outcome.OUTAGE, reason, may_land=True)
        if answer in (PERMANENT, PARTIAL):
            return NumberResult(Outcome.PERMANENT, "rejected")
        if request.kind == "lookup":
            if request.found is None:
                return NumberResult(Outcome.DONE, "already")
            if stopping:
                return None
            try:
                return self._send(request.target, "delete", request.items, entry_id=request.found)
            except LeaseLostError as exc:
                return exc
        if request.kind == "delete" and request.found is None:
            return NumberResult(Outcome.RETRY, "invalid_id")  # gone since the lookup
        return NumberResult(Outcome.DONE)

    # -- reconciliation ---------------------------------------------------------------------

    def list_numbers(self, target: str) -> list[str]:
        hook, self.listing_hook = self.listing_hook, None
        if hook is not None:
            hook()  # something happens after reconcile read the ledger, before the listing
        now = self.sim.clock_ms()
        return [n for n in self.lists[target] if self.holds(target, n, now)]


class OneList(Model):
    """A provider that keeps a number in one list across its databases, like Daktela: each
    target is a database. An add creates the entry, or (it exists) finds it and, unless it
    is in this database with this expiry, moves it here by its id (answered as moved from
    the database it was in); a remove finds the entry in its own database and deletes it by
    id, wherever it has been moved meanwhile. Expired entries stay (they no longer block)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entries: dict[str, Entry] = {}  # number -> its one entry (shared with the views)
        self.moves = [0]  # entries moved between databases (shared with the views)

    def view(self, target: str) -> OneList:
        """The adapter of a process configured for one database: the same list."""
        model = OneList(self.sim, self.name, [target], self.capabilities)
        model.entries, model.moves = self.entries, self.moves
        model.adds, model.sent, model._ids = self.adds, self.sent, self._ids
        return model

    def entry(self, target: str, n: str) -> Entry | None:
        entry = self.entries.get(n)
        return entry if entry is not None and entry.target == target else None

    def apply(self, request: Request) -> None:
        if request.applied or not request.can_land(self.sim.clock_ms()):
            return
        request.applied = True
        item = request.items[0]  # one number a request
        n, entry = item.e164, self.entries.get(item.e164)
        if request.kind == "create":
            if entry is None:
                self.entries[n] = Entry(next(self._ids), item.expires_ms, request.target)
                key = (request.target, n)
                self.adds[key] = self.adds.get(key, 0) + 1
            else:
                request.found = entry.id  # a uniqueness error
        elif request.kind == "find":
            if entry is not None:
                request.found, request.found_in = entry.id, entry.target
                request.found_expires = entry.expires_ms
        elif request.kind == "put":
            if entry is not None and entry.id == request.entry_id:
                self.moves[0] += entry.target != request.target
                entry.target, entry.expires_ms = request.target, item.expires_ms
                request.found = entry.id
        elif request.kind == "lookup":
            if entry is not None and entry.target == request.target:
                request.found = entry.id
        elif request.kind == "delete" and entry is not None and entry.id == request.entry_id:
            del self.entries[n]  # whichever database holds it now
            request.found = entry.id

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        return self._per_number(target, action, items)

    def first_kind(self, action: Action) -> str:
        return "create" if action is Action.ADD else "lookup"

    def _one(self, request: Request, stopping: bool) -> NumberResult | Request | Exception | None:
        """As the Daktela adapter reads each answer (worker/providers/daktela.py)."""
        answer = request.answer
        if answer == AUTH:
            return AuthError("http_401", "model refused", setting="MODEL_KEY")
        if answer in (OUTAGE, LOST):
            reason = "http_503" if answer == OUTAGE else "timeout"
            # A lookup changes nothing: it cannot land later (worker/providers/http.py).
            changes = request.kind not in ("find", "lookup")
            return NumberResult(Outcome.OUTAGE, reason, may_land=changes)
        if answer in (PERMANENT, PARTIAL):
            return NumberResult(Outcome.PERMANENT, "rejected")
        target, item = request.target, request.items[0]
        follow: tuple[str, int, str] | None = None
        if request.kind == "create":
            if request.found is None:
                return NumberResult(Outcome.DONE)
            follow = ("find", 0, "")
        elif request.kind == "find":
            if request.found is None:
                return NumberResult(Outcome.RETRY, "unique_but_not_found")
            if request.found_in == target and request.found_expires == item.expires_ms:
                return NumberResult(Outcome.DONE, "already")
            follow = ("put", request.found, request.found_in)
        elif request.kind == "put":
            if request.found is None:
                return NumberResult(Outcome.PERMANENT, "correct_failed")
            if request.found_in != target:
                return NumberResult(Outcome.DONE, "moved", f"from {request.found_in}")
            return NumberResult(Outcome.DONE, "corrected")
        elif request.kind == "lookup":
            if request.found is None:
                return NumberResult(Outcome.DONE, "already")
            follow = ("delete", request.found, "")
        else:  # delete: a 404 (the id is gone) is done too
            return NumberResult(Outcome.DONE, "" if request.found else "already")
        if stopping:
            return None
        kind, entry_id, found_in = follow
        try:
            return self._send(target, kind, request.items, entry_id=entry_id, found_in=found_in)
        except LeaseLostError as exc:
            return exc

    def list_numbers(self, target: str) -> list[str]:
        hook, self.listing_hook = self.listing_hook, None
        if hook is not None:
            hook()
        now = self.sim.clock_ms()
        return [n for n in self.entries if self.holds(target, n, now)]


def capabilities(kind: str) -> Capabilities:
    """Small chunks, so that a handful of numbers makes several of them."""
    return {
        "bulk": Capabilities(max_batch=3, supports_remove=True, number_format=NumberFormat.PLUS),
        "lookup": Capabilities(max_batch=3, supports_remove=True,
                               number_format=NumberFormat.PLUS, bulk=False, concurrency=2),
        "addonly": Capabilities(max_batch=2, supports_remove=False,
                                number_format=NumberFormat.PLUS, needs_call_context=True,
                                bulk=False, concurrency=2),
        "native": Capabilities(max_batch=2, supports_remove=True,
                               number_format=NumberFormat.PLUS, supports_expiry=True,
                               bulk=False, concurrency=2),
        "onelist": Capabilities(max_batch=2, supports_remove=True,
                                number_format=NumberFormat.PLUS, supports_expiry=True,
                                bulk=False, concurrency=2, one_list=True),
    }[kind]  # fmt: skip


@dataclass
class Task:
    """A Celery task the simulation has not run yet."""

    kind: str  # flush | push
    args: tuple[Any, ...]


@dataclass
class SimDispatcher:
    """Celery, as the simulation sees it: tasks queue until a rule runs, drops or repeats
    one."""

    tasks: list[Task] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)  # push tasks run once (redelivery)

    def flush(self, target: str, action: Action, mode: str, delay: float = 0.0) -> None:
        self.tasks.append(Task("flush", (target, action, mode)))

    def push(self, chunk_id: str, provider: str) -> None:
        self.tasks.append(Task("push", (chunk_id, provider)))
