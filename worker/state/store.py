"""All optout state in Redis: one key scheme, and the Lua scripts that change it atomically.

Key scheme (every key starts with the prefix, default ``optout:``):

=============================  ======  ====================================================
key                            type    holds
=============================  ======  ====================================================
``idem:{source}:{key}``        string  ``{body hash}|{event id}``; expires (30 days default)
``num:{e164}``                 hash    ledger: s (blocked/unblocked), v (version), t (newest
                                       event time ms), rt (latest remove time), bl (blocks
                                       newer than rt: JSON [[t, expiry], ...]), x (expiry ms
                                       the blocks add up to, 0 = none), e (last
                                       event id), n (label), src, r (reason), c (call
                                       context JSON), u (updated ms), xr (1: unblocked
                                       because its expiry passed), rs (the sources of the
                                       adds behind the block, one a line: routes for
                                       catch-up and reconcile)
``audit:{e164}``               list    JSON audit entries, newest first, capped
``blocked``                    set     numbers the ledger blocks now
``expiry``                     zset    temporarily blocked numbers -> expiry (ms)
``stage:{target}:{action}``    zset    staged numbers -> time staged (ms): the batch
``inflight:{target}``          hash    number -> chunk id pushing it (at most one)
``chunk:{id}``                 string  JSON chunk: target, provider, action, items
                                       ``[e164, version, label, expiry, ctx, source, reason,
                                       updated]``
``leases``                     zset    chunk id -> lease expiry (ms)
``opened``                     hash    chunk id -> pushes that opened it (a task delivered
                                       twice pushes it twice)
``chunkseq``                   string  chunk id counter
``confirmed:{target}``         hash    number -> ``{state}:{version}`` the provider holds, or
                                       ``?`` (unknown: a push whose answer no longer
                                       counts may have landed after a newer one)
``unknown:{target}``           hash    number -> the chunk in flight whose answer will not
                                       count (a recovered chunk's request may follow it)
``late:{target}``              hash    number -> until when (ms) a request its push lost
                                       (chunk recovered or pushed twice; a timeout or 5xx)
                                       may still land: a push leased before then is
                                       confirmed by one more after it
``latesib:{provider}``         hash    the same for a late request at a provider that keeps
                                       a number in one list (Daktela: it may take another
                                       target's entry): for adds there
``answer:{target}``            hash    number -> JSON of the provider's last answer
``fails:{target}``             hash    number -> ``{version}:{count}``: failed attempts of
                                       that ledger version since its last success
``outage:{target}``            hash    number -> ``{version}:{first}:{last}`` (ms): its
                                       current streak of outages, for the outage budget
``window:{target}``            hash    number -> ``{version}:{spent}:{last}`` (ms): time
                                       spent on answers a window bounds (Weya's 404)
``retry``                      zset    ``{target}|{e164}`` -> due time (ms)
``dlq``                        hash    ``{target}|{e164}`` -> JSON dead letter
``dlq:age``                    zset    ``{target}|{e164}`` -> first failure time (ms)
``paused``                     hash    provider -> JSON (reason, setting to fix, time)
``hold:{provider}``            string  end (ms) of a hold for all workers (Retry-After, or
                                       an open circuit)
``breaker:{provider}``         hash    circuit breaker: fails (chunks in a row whose
                                       requests all failed), opens, since, until, reason
``targets``                    hash    target -> JSON capabilities (provider, add_only, ...)
``targets:live``               zset    target -> live until (ms): announced by a process
                                       that has it enabled; accepts stage for these
``backfill``                   hash    target -> catch-up cursor: ``b:{n}`` over
                                       ``blocked``, then ``c:{n}`` over ``confirmed``,
                                       each ``@{generation}`` (one per catch-up)
``backfill:seq``               string  catch-up generation counter
``slots:{provider}``           zset    request token -> lease expiry (concurrency cap)
``rate:{provider}``            zset    request token -> start (ms), last second (rate cap)
``review:{source}``            list    inputs kept for a person (e.g. CDRs of unknown type)
``counts:{group}``             hash    counters (e.g. CDRs ignored / reviewed, by reason)
=============================  ======  ====================================================
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.commands.core import Script

from worker.providers.base import Action
from worker.runtime import fastjson
from worker.state.clock import ServerClock

Clock = Callable[[], float]

_SCRIPTS = (
    "accept", "claim", "complete", "release", "sweep", "replay", "renew", "register",
    "stage_many", "adopt", "slot", "purge", "expire", "open", "hold", "reconcile", "cursor",
    "turn",
)  # fmt: skip


def _load_script(name: str) -> str:
    lua = resources.files("worker.state") / "lua"
    return (lua / "prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _decode(raw: Any) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


def _as_list(value: Any) -> list[Any]:
    # cjson writes an empty Lua table as {} (Redis) or [] (fakeredis): both mean "none".
    return value if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class Staged:
    """A batch an operation touched: its size now and before the operation, and the
    numbers in flight to its target."""

    target: str
    action: Action
    count: int
    before: int
    in_flight: int = 0

    @property
    def opened(self) -> bool:
        """This operation started the batch (and so its linger)."""
        return self.before == 0

    def filled(self, size: int) -> bool:
        """This operation completed a chunk: one full-flush per chunk, not one per event."""
        return self.count // size > self.before // size


def _staged(raw: Any) -> list[Staged]:
    return [
        Staged(str(t), Action(str(a)), int(c), int(b), int(f)) for t, a, c, b, f in _as_list(raw)
    ]


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    """What the accept script did with one event."""

    status: str  # ok | duplicate | conflict
    event_id: str
    results: list[str] = field(default_factory=list)  # per number: applied, stale, ...
    staged: list[Staged] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChunkItem:
    """One number of a leased chunk, with the ledger version it pushes."""

    e164: str
    version: str
    name: str
    expires_ms: int
    context: str = ""
    source: str = ""
    reason: str = ""
    updated_ms: int = 0  # when the ledger took this state: propagation time starts there


@dataclass(frozen=True, slots=True)
class Chunk:
    """A leased batch of numbers for one target and action."""

    id: str
    target: str
    provider: str
    action: Action
    items: list[ChunkItem]
    raw: str

    @classmethod
    def parse(cls, raw: str) -> Chunk:
        data = json.loads(raw)
        return cls(
            id=str(data["id"]),
            target=str(data["target"]),
            provider=str(data["provider"]),
            action=Action(data["action"]),
            items=[
                ChunkItem(str(n), str(v), str(nm), int(x), str(c), str(src), str(r), int(u))
                for n, v, nm, x, c, src, r, u in data["items"]
            ],
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class CompleteOptions:
    """How complete.lua treats failures (names as the script reads them)."""

    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int
    outage_budget_ms: int  # a number failing by outages this long is dead-lettered
    breaker_threshold: int  # chunks in a row whose requests all failed: the circuit opens
    breaker_cap_ms: int  # the longest the open circuit holds the provider
    moved_retry_ms: int  # a target a number was taken from is pushed again after this
    late_ms: int  # how long a request may land after its push lost the chunk (release)
    hold_ms: int = 0  # a Retry-After the chunk's answers asked for


@dataclass(frozen=True, slots=True)
class Completion:
    """What complete.lua did: 'ok' or 'orphan' (the chunk was recovered meanwhile), counts
    per outcome, the batches it touched, and the provider's circuit after it."""

    status: str
    counts: dict[str, int]
    staged: list[Staged]
    circuit: str = "closed"  # closed | failing | open


@dataclass(frozen=True)
class OpenChunk:
    """A chunk as a push opens it: is its provider stopped (paused, or held by a Retry-After
    or an open circuit), and each number's (state, version) in the ledger now ("", "" for
    one the ledger does not hold)."""

    chunk: Chunk
    stopped: bool
    states: dict[str, tuple[str, str]]


def _accept_args(
    event: dict[str, Any],
    numbers: list[tuple[str, str]],
    route: dict[str, Any],
    idempotency_ttl_seconds: int,
    audit_cap: int,
    idempotency_mode: str,
    force: bool = False,
) -> list[Any]:
    return [
        fastjson.dumps(event),
        idempotency_ttl_seconds,
        audit_cap,
        fastjson.dumps(route),
        fastjson.dumps(numbers),
        idempotency_mode,
        "1" if force else "0",
    ]


class ReplicationError(redis.RedisError):
    """A write did not reach enough replicas in time (OPTOUT_REDIS_WAIT_REPLICAS)."""


@dataclass(frozen=True, slots=True)
class Replication:
    """Wait for this many replicas to have a write, on the connection that wrote it."""

    replicas: int
    timeout_ms: int = 1000

    def check(self, acked: int) -> None:
        if acked < self.replicas:
            raise ReplicationError(
                f"the write reached {acked} of {self.replicas} replicas within {self.timeout_ms} ms"
            )


def _accept_outcome(answer: Any) -> AcceptOutcome:
    raw = _decode(answer)
    return AcceptOutcome(
        status=raw["status"],
        event_id=raw["event_id"],
        results=[str(r) for r in _as_list(raw.get("results"))],
        staged=_staged(raw.get("staged")),
    )


class Store:
    """The Redis state of optout-worker. Every multi-key change is one Lua script."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "optout:",
        clock: Clock | None = None,
        audit_cap: int = 50,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        # With the server's clock (the default; tests pass fake ones) the scripts read TIME
        # as they run, and Python reads it through ServerClock.
        self.clock: Clock = clock if clock is not None else ServerClock(client)
        self._caller_time = not isinstance(self.clock, ServerClock)
        self.audit_cap = audit_cap
        self._scripts = {name: client.register_script(_load_script(name)) for name in _SCRIPTS}

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def now_ms(self) -> int:
        return _ms(self.clock())

    def argv(self, *args: Any) -> list[Any]:
        """A script's arguments: every script takes the prefix and the time first (empty: the
        script reads the server's own, lua/prelude.lua)."""
        return [self.prefix, self.now_ms() if self._caller_time else "", *args]

    def script(self, name: str) -> Script:
        return self._scripts[name]

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](keys=[], args=self.argv(*args))

    # -- accept ---------------------------------------------------------------------------

    def accept(
        self,
        event: dict[str, Any],
        numbers: list[tuple[str, str]],
        route: dict[str, Any],
        idempotency_ttl_seconds: int,
        idempotency_mode: str = "once",
        *,
        force: bool = False,
        replication: Replication | None = None,
    ) -> AcceptOutcome:
        """Write one event (see lua/accept.lua); `route` picks the live targets it goes to.
        With `replication`, WAIT follows the script on the same connection (a pipeline): on
        any other it would return at once, having written nothing to wait for."""
        args = self.argv(
            *_accept_args(
                event, numbers, route, idempotency_ttl_seconds, self.audit_cap,
                idempotency_mode, force,
            )
        )  # fmt: skip
        script = self._scripts["accept"]
        if replication is None:
            return _accept_outcome(script(keys=[], args=args))
        pipe = self.redis.pipeline(transaction=False)
        script(keys=[], args=args, client=pipe)
        pipe.wait(replication.replicas, replication.timeout_ms)
        answer, acked = pipe.execute()
        replication.check(int(acked))
        return _accept_outcome(answer)

    # -- batching and pushing ---------------------------------------------------------------

    def claim(
        self,
        target: str,
        provider: str,
        action: Action,
        *,
        size: int,
        lease_seconds: float,
        mode: str,
        linger_ms: int,
        max_chunks: int,
        max_in_flight: int = 0,
    ) -> tuple[str, list[str], list[Staged]]:
        """Lease staged numbers as chunks (see lua/claim.lua); `max_in_flight`: claim none
        while the target has that many chunks' worth of numbers in flight (0: no cap)."""
        raw = _decode(
            self._run(
                "claim",
                target,
                provider,
                action.value,
                size,
                _ms(lease_seconds),
                mode,
                linger_ms,
                max_chunks,
                max_in_flight,
            )
        )
        chunks = [str(c) for c in _as_list(raw.get("chunks"))]
        return str(raw["status"]), chunks, _staged(raw.get("staged"))

    def open_chunk(self, chunk_id: str, lease_seconds: float) -> OpenChunk | None:
        """A chunk about to be pushed, whether its provider is stopped, and its numbers'
        ledger states; its lease starts again now. None when the chunk is gone (completed
        or recovered)."""
        flat = [_text(x) for x in _as_list(self._run("open", chunk_id, _ms(lease_seconds)))]
        if not flat:
            return None
        chunk = Chunk.parse(flat[0])
        states = {
            item.e164: (flat[2 + 2 * i], flat[3 + 2 * i]) for i, item in enumerate(chunk.items)
        }
        return OpenChunk(chunk, flat[1] == "1", states)

    def renew(self, chunk_id: str, lease_seconds: float) -> bool:
        return bool(self._run("renew", chunk_id, _ms(lease_seconds)))

    def complete(
        self,
        chunk: Chunk,
        results: dict[str, tuple[str, str, str, int, float, int, int]],
        options: CompleteOptions,
    ) -> Completion:
        """Record a chunk's per-number results (see lua/complete.lua)."""
        opts = {**asdict(options), "audit_cap": self.audit_cap}
        raw = _decode(self._run("complete", chunk.raw, json.dumps(results), json.dumps(opts)))
        return Completion(
            str(raw["status"]),
            {str(k): int(v) for k, v in (raw.get("counts") or {}).items()},
            _staged(raw.get("staged")),
            str(raw.get("circuit") or "closed"),
        )

    def release(self, chunk_id: str, *, recover: bool, late_ms: int) -> tuple[str, list[Staged]]:
        """Give a chunk's numbers back to staging: handed back unsent by its pusher, or
        recovered once its lease has run out ('alive' if it was renewed meanwhile); a late
        request of its pusher may land for `late_ms` (see lua/release.lua)."""
        mode = "recover" if recover else "return"
        raw = _decode(self._run("release", chunk_id, mode, late_ms))
        return str(raw["status"]), _staged(raw.get("staged"))

    def expired_leases(self, limit: int = 100) -> list[str]:
        ids = self.redis.zrangebyscore(self.key("leases"), "-inf", self.now_ms(), 0, limit)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def adopt_step(self, count: int = 200) -> bool:
        """One page of the pass that adopts blocks written before blocks kept their source
        (lua/adopt.lua), from where the last step left it; False once it has ended. Pages
        as small as accept's writes (WRITE_CHUNK): a long script stalls every other call."""
        cursor = self.redis.get(self.key("adopted"))
        if cursor == b"done":
            return False
        position, numbers = self.blocked_page(_text(cursor or b"0"), count)
        if numbers:
            self._run("adopt", json.dumps(numbers))
        self.redis.set(self.key("adopted"), "done" if position == "0" else position)
        return True

    def expire_due(self, limit: int = 1000) -> tuple[int, list[Staged]]:
        """Lift temporary blocks whose expiry has passed."""
        raw = _decode(self._run("expire", limit, self.audit_cap))
        return int(raw["lifted"]), _staged(raw.get("staged"))

    def take_turn(self, name: str, seconds: float) -> str | None:
        """A token if no other run of `name` took a turn in the last `seconds` (the server's
        clock keeps the time: SET NX PX), else None."""
        token = uuid.uuid4().hex
        key = self.key("turn", name)
        taken = self.redis.set(key, token, nx=True, px=max(1, int(seconds * 1000)))
        return token if taken else None

    def give_turn_back(self, name: str, token: str) -> None:
        """End this run's turn early, unless it ran out and another run took one since."""
        self._run("turn", name, token)

    def sweep_retries(self, limit: int = 1000) -> tuple[int, list[Staged]]:
        """Move due retries into their batches; drop the work of targets that are not live
        (see sweep.lua)."""
        raw = _decode(self._run("sweep", limit))
        return int(raw["moved"]), _staged(raw.get("staged"))

    def staged_batches(self, targets: Iterable[str]) -> list[tuple[str, Action, int, int]]:
        """(target, action, size, oldest staged ms) of every non-empty batch."""
        pairs = [(t, a) for t in targets for a in Action]
        pipe = self.redis.pipeline(transaction=False)
        for target, action in pairs:
            key = self.key("stage", target, action.value)
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
        answers = pipe.execute()
        out = []
        for i, (target, action) in enumerate(pairs):
            size, oldest = answers[2 * i], answers[2 * i + 1]
            if size:
                out.append((target, action, int(size), int(oldest[0][1]) if oldest else 0))
        return out

    # -- providers ------------------------------------------------------------------------

    def pause(self, provider: str, reason: str, setting: str, detail: str) -> None:
        info = {"reason": reason, "setting": setting, "detail": detail, "at": self.now_ms()}
        self.redis.hset(self.key("paused"), provider, json.dumps(info))

    def resume(self, provider: str) -> bool:
        return bool(self.redis.hdel(self.key("paused"), provider))

    def paused(self) -> dict[str, dict[str, Any]]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("paused")))
        return {_text(k): _decode(v) for k, v in raw.items()}

    def hold(self, provider: str, seconds: float) -> None:
        """Stop every worker pushing to a provider until a Retry-After has passed (the later
        end wins, atomically). The key holds the end time by this store's clock."""
        self._run("hold", provider, _ms(seconds))

    def held_for(self, provider: str) -> float:
        until = self.redis.get(self.key("hold", provider))
        return max(0.0, (int(until) - self.now_ms()) / 1000.0) if until else 0.0

    def open_circuits(self, providers: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The providers (of these) whose circuit has opened and not yet closed."""
        return {p: c for p in providers if (c := self.circuit(p)) is not None}

    def circuit(self, provider: str) -> dict[str, Any] | None:
        """The provider's circuit breaker when it has opened and not yet closed: since and
        until when (ms), how often it opened, and the last failure."""
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("breaker", provider)))
        info = {_text(k): _text(v) for k, v in raw.items()}
        if "opens" not in info:
            return None
        return {
            "opens": int(info["opens"]),
            "since_ms": int(info.get("since", 0)),
            "until_ms": int(info.get("until", 0)),
            "reason": info.get("reason", ""),
        }

    # -- targets, backfill and rate limits ------------------------------------------------

    def register_targets(
        self,
        metas: dict[str, dict[str, Any]],
        ttl_seconds: float,
        routes: dict[str, dict[str, list[str]]] | None = None,
    ) -> tuple[list[tuple[str, bool]], str | None]:
        """Announce targets with their capabilities, live for `ttl_seconds`, and the routes
        (OPTOUT_ROUTES; None: left as they are); answer the targets that became live, each
        with whether it is caught up from the ledger (not when the ledger holds nothing it
        could need), and whether the announced routes changed (every live target is caught
        up then): 'changed', 'new' (none were announced before) or None."""
        # Canonical: processes with the same routes announce the same text (register.lua
        # starts a catch-up of every live target when the text changes).
        given = (
            ""
            if routes is None
            else json.dumps(
                {src: {k: sorted(v) for k, v in sorted(r.items())} for src, r in routes.items()},
                sort_keys=True,
            )
        )
        raw = _decode(self._run("register", json.dumps(metas), _ms(ttl_seconds), given))
        live = [(str(t), bool(b)) for t, b in _as_list(raw["live"])]
        return live, str(raw["routes"]) if raw["routes"] else None

    def announced_routes(self) -> dict[str, dict[str, list[str]]] | None:
        """The deployment's routes as the last announcement left them (register.lua), what
        target_state decides by; None when no process has announced any."""
        raw = self.redis.get(self.key("routes"))
        return None if raw is None else cast(dict[str, dict[str, list[str]]], _decode(raw))

    def known_targets(self) -> list[str]:
        """Every target any process has announced, live or not."""
        return sorted(_text(t) for t in cast(list[Any], self.redis.hkeys(self.key("targets"))))

    def directory(self) -> dict[str, dict[str, Any]]:
        """The live targets (announced within their TTL) -> their capabilities."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.key("targets:live"), self.now_ms(), "+inf")
        pipe.hgetall(self.key("targets"))
        live, metas = pipe.execute()
        known = {_text(k): v for k, v in cast(dict[Any, Any], metas).items()}
        out: dict[str, dict[str, Any]] = {}
        for raw in live:
            target = _text(raw)
            meta = known.get(target)
            out[target] = dict(_decode(meta)) if meta else {"provider": target.split(":")[0]}
        return out

    def backfills(self) -> dict[str, str]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("backfill")))
        return {_text(k): _text(v) for k, v in raw.items()}

    def blocked_page(self, cursor: str, count: int) -> tuple[str, list[str]]:
        next_cursor, members = self.redis.sscan(self.key("blocked"), int(cursor), count=count)
        return str(next_cursor), [_text(m) for m in members]

    def confirmed_page(self, target: str, cursor: str, count: int) -> tuple[str, list[str]]:
        """A page of the numbers a target has a confirmation for (HSCAN)."""
        next_cursor, entries = self.redis.hscan(
            self.key("confirmed", target), int(cursor), count=count
        )
        return str(next_cursor), [_text(n) for n in entries]

    def advance_backfill(self, target: str, read: str, cursor: str | None) -> bool:
        """Move a catch-up on from the cursor `read` to `cursor` (None: done), unless a
        fresh catch-up replaced it meanwhile (answers False then)."""
        return bool(self._run("cursor", target, read, cursor or ""))

    def stage_many(self, target: str, numbers: list[str]) -> tuple[int, list[Staged]]:
        """A catch-up step: stage what the ledger says for numbers the target lacks."""
        raw = _decode(self._run("stage_many", target, json.dumps(numbers)))
        return int(raw["staged"]), _staged(raw.get("summary"))

    def repair(
        self, target: str, numbers: list[str], mode: str, who: str
    ) -> tuple[int, int, list[Staged]]:
        """Stage what a reconciliation found (lua/reconcile.lua): 'missing' numbers pushed
        again, 'extra' ones removed unless the ledger blocks them now. Answers (staged,
        kept because blocked since, batches touched)."""
        raw = _decode(
            self._run("reconcile", target, json.dumps(numbers), mode, who, self.audit_cap)
        )
        return int(raw["staged"]), int(raw["kept"]), _staged(raw.get("summary"))

    def ledger_sources(self, numbers: list[str]) -> list[list[str]]:
        """Per number, the sources of the adds behind its block (`rs`; a ledger written
        before it was kept: the source of its last change)."""
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hmget(self.key("num", n), "rs", "src")
        out = []
        for sources, last in pipe.execute():
            if sources:
                out.append(_text(sources).split("\n"))
            else:
                out.append([_text(last)] if last else [""])
        return out

    def acquire_slot(
        self, provider: str, token: str, *, rps: float, concurrency: int, lease_seconds: float
    ) -> int:
        """Take a request slot shared by every worker: 0 when taken, ms to wait when none is
        free, or minus the ms left while a Retry-After holds the provider."""
        return int(
            self._run("slot", "acquire", provider, token, rps, concurrency, _ms(lease_seconds))
        )

    def release_slot(self, provider: str, token: str) -> None:
        self._run("slot", "release", provider, token, 0, 0, 0)

    # -- ledger reads -----------------------------------------------------------------------

    def ledger(self, e164: str) -> dict[str, str]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("num", e164)))
        return {_text(k): _text(v) for k, v in raw.items()}

    def audit(self, e164: str, limit: int | None = None) -> list[dict[str, Any]]:
        end = -1 if limit is None else limit - 1
        raw = cast(list[Any], self.redis.lrange(self.key("audit", e164), 0, end))
        return [_decode(entry) for entry in raw]

    def provider_view(self, e164: str, targets: list[str]) -> dict[str, dict[str, Any]]:
        """Where one number stands at each target: confirmed, staged, in flight, retrying,
        dead-lettered, and the provider's last answer."""
        pipe = self.redis.pipeline(transaction=False)
        for target in targets:
            member = f"{target}|{e164}"
            pipe.hget(self.key("confirmed", target), e164)
            pipe.zscore(self.key("stage", target, "add"), e164)
            pipe.zscore(self.key("stage", target, "remove"), e164)
            pipe.hget(self.key("inflight", target), e164)
            pipe.zscore(self.key("retry"), member)
            pipe.hget(self.key("fails", target), e164)
            pipe.hget(self.key("dlq"), member)
            pipe.hget(self.key("answer", target), e164)
        answers = pipe.execute()
        view: dict[str, dict[str, Any]] = {}
        for i, target in enumerate(targets):
            conf, s_add, s_rem, infl, retry, att, dead, answer = answers[8 * i : 8 * i + 8]
            staged = "add" if s_add is not None else "remove" if s_rem is not None else None
            view[target] = {
                "confirmed": _text(conf) if conf else None,
                "staged": staged,
                "in_flight_chunk": _text(infl) if infl else None,
                "retry_at_ms": int(retry) if retry is not None else None,
                "attempts": _attempts(att),
                "dead_letter": _decode(dead) if dead else None,
                "last_answer": _decode(answer) if answer else None,
            }
        return view

    # -- dead letters -------------------------------------------------------------------------

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first."""
        ids = cast(list[Any], self.redis.zrange(self.key("dlq:age"), 0, -1))
        if not ids:
            return []
        raw = cast(list[Any], self.redis.hmget(self.key("dlq"), [_text(i) for i in ids]))
        return [_decode(entry) for entry in raw if entry is not None]

    def replay(self, ids: list[str], who: str) -> tuple[int, list[Staged]]:
        raw = _decode(self._run("replay", json.dumps(ids), who, self.audit_cap))
        return int(raw["replayed"]), _staged(raw.get("staged"))

    def blocked_among(self, numbers: list[str]) -> set[str]:
        """Which of these numbers the ledger blocks now."""
        if not numbers:
            return set()
        flags = self.redis.smismember(self.key("blocked"), numbers)
        return {n for n, flag in zip(numbers, flags, strict=True) if flag}

    def blocked_until(self, numbers: list[str], until_ms: int, source: str) -> set[str]:
        """Which of these numbers a block of `source`'s own holds at least until `until_ms`
        (0: for good); another source's block may be routed to other providers
        (prelude.lua, target_state)."""
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hmget(self.key("num", n), "s", "bl", "rs", "src")
        out = set()
        for n, (state, bl, rs, src) in zip(numbers, pipe.execute(), strict=True):
            if state != b"blocked":
                continue
            # A block written before blocks kept their source stands for each source the
            # ledger named behind it (prelude.lua: adopt_legacy).
            known = _text(rs or src or b"").split("\n")
            ends = [
                int(b[1]) for b in (_decode(bl) if bl else [])
                if (b[2] == source if len(b) > 2 else source in known)
            ]  # fmt: skip
            if any(held == 0 or (until_ms != 0 and held >= until_ms) for held in ends):
                out.add(n)
        return out

    def blocked_pages(self, count: int) -> Iterator[list[tuple[str, str, str]]]:
        """(number, expiry ms, updated ms) of every blocked number, a page at a time."""
        cursor = "0"
        while True:
            cursor, numbers = self.blocked_page(cursor, count)
            if numbers:
                pipe = self.redis.pipeline(transaction=False)
                for n in numbers:
                    pipe.hmget(self.key("num", n), "x", "u")
                rows = []
                for n, (x, u) in zip(numbers, pipe.execute(), strict=True):
                    expires = _text(x) if x and _text(x) != "0" else ""
                    rows.append((n, expires, _text(u) if u else ""))
                yield rows
            if cursor == "0":
                return

    def purge(self, ids: list[str], who: str) -> int:
        return int(self._run("purge", json.dumps(ids), who, self.audit_cap))

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per target."""
        out: dict[str, int] = {}
        for member in self.redis.zscan_iter(self.key("dlq:age"), count=1000):
            target = _text(member[0]).split("|", 1)[0]
            out[target] = out.get(target, 0) + 1
        return out

    def retry_counts(self) -> dict[str, int]:
        """Numbers waiting for a retry, per target."""
        out: dict[str, int] = {}
        for member in self.redis.zscan_iter(self.key("retry"), count=1000):
            target = _text(member[0]).split("|", 1)[0]
            out[target] = out.get(target, 0) + 1
        return out

    def oldest_dead_letter_ms(self) -> int | None:
        first = self.redis.zrange(self.key("dlq:age"), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def counts(self, targets: list[str]) -> dict[str, dict[str, int]]:
        """Per target: staged adds/removes, in flight; plus retrying and dead-lettered totals."""
        pipe = self.redis.pipeline(transaction=False)
        for target in targets:
            pipe.zcard(self.key("stage", target, "add"))
            pipe.zcard(self.key("stage", target, "remove"))
            pipe.hlen(self.key("inflight", target))
        answers = pipe.execute()
        out = {}
        for i, target in enumerate(targets):
            out[target] = {
                "staged_add": int(answers[3 * i]),
                "staged_remove": int(answers[3 * i + 1]),
                "in_flight": int(answers[3 * i + 2]),
            }
        return out

    # -- ingress bookkeeping -------------------------------------------------------------

    def keep_for_review(self, source: str, entry: dict[str, Any], keep: int = 1000) -> None:
        """Keep an input we would not guess about for a person to read (newest first)."""
        key = self.key("review", source)
        pipe = self.redis.pipeline()
        pipe.lpush(key, json.dumps({"at": self.now_ms(), **entry}, default=str))
        pipe.ltrim(key, 0, keep - 1)
        pipe.execute()

    def reviews(self, source: str, limit: int = 100) -> list[dict[str, Any]]:
        raw = cast(list[Any], self.redis.lrange(self.key("review", source), 0, limit - 1))
        return [_decode(entry) for entry in raw]

    def count(self, group: str, name: str) -> None:
        self.redis.hincrby(self.key("counts", group), name, 1)

    def counts_of(self, group: str) -> dict[str, int]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("counts", group)))
        return {_text(k): int(v) for k, v in raw.items()}

    def ping(self) -> bool:
        return bool(self.redis.ping())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _attempts(raw: Any) -> int:
    """The count of a ``fails:{target}`` entry (``{version}:{count}``)."""
    return int(_text(raw).rsplit(":", 1)[-1]) if raw else 0


AsyncClientFactory = Callable[[], aredis.Redis]


@dataclass
class _Loop:
    """AsyncAccept's state in one event loop: an asyncio client belongs to its loop."""

    loop: asyncio.AbstractEventLoop
    client: aredis.Redis
    pending: list[tuple[list[Any], asyncio.Future[Any]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class AsyncAccept:
    """The accept script from an event loop, for the HTTP API, with group commit: events
    that arrive while one write is in flight go to Redis together in the next pipeline.

    Through a worker thread and the sync client a one-number event cost ~0.5 ms of API CPU
    (GIL hand-offs); awaited one by one ~0.13 ms; grouped ~0.04 ms, on one connection, and
    Redis fsyncs a group once. Each event is still its own script call, so its atomicity,
    idempotency and answer are its own; each answer still waits for the AOF fsync."""

    #: Events per pipeline at most: one slow group must not hold thousands of answers.
    GROUP = 200

    def __init__(
        self,
        store: Store,
        client: AsyncClientFactory,
        replication: Replication | None = None,
    ) -> None:
        self.store = store
        self._factory = client
        self._script = store.script("accept")
        self._state: _Loop | None = None
        #: A group's WAIT goes at the end of its pipeline, on the connection that wrote it.
        self.replication = replication

    def _here(self) -> _Loop:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            self._state = _Loop(loop, self._factory())
        return self._state

    async def accept(
        self,
        event: dict[str, Any],
        numbers: list[tuple[str, str]],
        route: dict[str, Any],
        idempotency_ttl_seconds: int,
    ) -> AcceptOutcome:
        store = self.store
        args = _accept_args(event, numbers, route, idempotency_ttl_seconds, store.audit_cap, "once")
        state = self._here()
        answer = state.loop.create_future()
        state.pending.append((store.argv(*args), answer))
        if state.writer is None:
            # Started on demand and gone when idle: nothing is left running on a loop that
            # closes (tests start and stop loops).
            state.writer = state.loop.create_task(self._write(state))
        return _accept_outcome(await answer)

    async def _write(self, state: _Loop) -> None:
        try:
            while state.pending:
                group = state.pending[: self.GROUP]
                del state.pending[: self.GROUP]
                await self._send(state.client, group)
        finally:
            state.writer = None
            for _, answer in state.pending:  # only when this task was cancelled
                if not answer.done():
                    answer.set_exception(redis.ConnectionError("the accept writer stopped"))
            state.pending.clear()

    async def _send(
        self, client: aredis.Redis, group: list[tuple[list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            answers, acked = await self._pipeline(client, [args for args, _ in group])
            if any(isinstance(a, redis.exceptions.NoScriptError) for a in answers):
                # Redis restarted (its script cache is empty): load once, redo those calls.
                await client.script_load(self._script.script)
                redo = [i for i, a in enumerate(answers)
                        if isinstance(a, redis.exceptions.NoScriptError)]  # fmt: skip
                again, acked_again = await self._pipeline(client, [group[i][0] for i in redo])
                for i, a in zip(redo, again, strict=True):
                    answers[i] = a
                acked = min(acked, acked_again)
        except BaseException as exc:
            # Every event of a failed group is answered with the error (the API says 503,
            # retry); the next group gets its own try.
            failure = exc if isinstance(exc, Exception) else redis.ConnectionError("cancelled")
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        short: ReplicationError | None = None
        if self.replication is not None:
            try:
                self.replication.check(acked)
            except ReplicationError as exc:
                short = exc
        for (_, answer), result in zip(group, answers, strict=True):
            if answer.done():  # its request went away; the event is written all the same
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            elif short is not None:
                answer.set_exception(short)
            else:
                answer.set_result(result)

    async def _pipeline(
        self, client: aredis.Redis, calls: list[list[Any]]
    ) -> tuple[list[Any], int]:
        """The calls' answers, and how many replicas have them (when asked to wait)."""
        # EVALSHA by hand: a pipeline's registered scripts cost a SCRIPT EXISTS round trip on
        # every execute; NOSCRIPT is handled in _send.
        async with client.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.evalsha(self._script.sha, 0, *args)
            if self.replication is not None:
                pipe.wait(self.replication.replicas, self.replication.timeout_ms)
            answers = list(await pipe.execute(raise_on_error=False))
        if self.replication is None:
            return answers, 0
        acked = answers.pop()
        return answers, int(acked) if isinstance(acked, int) else 0
