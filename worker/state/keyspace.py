"""The store's foundation: one Redis client, the key prefix, the clock the scripts run by,
and the Lua scripts (lua/) loaded into Redis; every part of the store builds on it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from worker.state.clock import ServerClock
from worker.state.codec import ms
from worker.state.replication import FENCE, Replication

Clock = Callable[[], float]
#: A request slot taken (lua/slot.lua): the provider, and the request's token.
Slot = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FirstSlot:
    """A push's first request slot, asked for in the round trip that opens its chunk
    (lua/prelude.lua: open_chunk): the request's token, the slot's terms (requests per
    second, concurrent requests, lease seconds) for each provider whose chunk may take one
    there, and the seconds within which the request is sent on it, or not at all (the rate
    cap counts it from the end of those)."""

    token: str
    terms: dict[str, tuple[float, int, float]]
    within: float = 0.0

    def encode(self) -> str:
        terms = {p: [rps, cap, ms(lease)] for p, (rps, cap, lease) in self.terms.items()}
        return json.dumps({"token": self.token, "within": ms(self.within), "terms": terms})


_SCRIPTS = (
    "accept", "claim", "complete", "release", "sweep", "replay", "renew", "register",
    "stage_many", "adopt", "slot", "purge", "expire", "open", "hold", "reconcile", "cursor",
    "turn", "settle", "move", "archived", "resume", "tails", "pending", "review",
    "batches_archived", "recent",
)  # fmt: skip


def _load_script(name: str) -> str:
    """A script as Redis runs it: the prelude, then the script's body as a function that
    the prelude's `audited` runs (its audit entries written however it ends)."""
    lua = resources.files("worker.state") / "lua"
    body = (lua / f"{name}.lua").read_text()
    return (lua / "prelude.lua").read_text() + "\nreturn audited(function()\n" + body + "\nend)\n"


class Keyspace:
    """One prefix's keys in Redis (the scheme: worker/state/store.py) and the scripts that
    change them. Every multi-key change is one Lua script."""

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
        self._preloaded: set[str] = set()  # loaded for _run_in_order

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def now_ms(self) -> int:
        return ms(self.clock())

    def argv(self, *args: Any) -> list[Any]:
        """A script's arguments: every script takes the prefix and the time first (empty: the
        script reads the server's own, lua/prelude.lua)."""
        return [self.prefix, self.now_ms() if self._caller_time else "", *args]

    def script(self, name: str) -> Script:
        return self._scripts[name]

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](keys=[], args=self.argv(*args))

    def _run_in_order(
        self, calls: list[tuple[str, tuple[Any, ...]]], give_back: Sequence[Slot] = ()
    ) -> list[Any]:
        """Several scripts' answers (each `(name, args)` as for `_run`), run one after the
        other in one round trip; a call's error (a RedisError) is answered in its place,
        not raised, so that a caller whose later call depended on an earlier one's success
        can undo it. EVALSHA by hand: a pipeline's registered scripts would cost a SCRIPT
        EXISTS round trip on every execute; instead each is loaded once, before its first
        such call. A script Redis does not hold all the same (it started over since) is run
        again on its own, which loads it: after the calls that followed it, as if another
        process's calls had come between (every script allows that). `give_back`: request
        slots given back first, in the same round trip (see `give_back_slots`)."""
        for name in {name for name, _ in calls} - self._preloaded:
            self.redis.script_load(self._scripts[name].script)
            self._preloaded.add(name)
        pipe = self.redis.pipeline(transaction=False)
        self._give_back_in(pipe, give_back)
        for name, args in calls:
            pipe.evalsha(self._scripts[name].sha, 0, *self.argv(*args))
        answers = list(pipe.execute(raise_on_error=False))[len(give_back) :]
        for i, (name, args) in enumerate(calls):
            if isinstance(answers[i], redis.exceptions.NoScriptError):
                try:
                    answers[i] = self._run(name, *args)
                except redis.RedisError as exc:
                    answers[i] = exc
        return answers

    def _run_giving_back(self, give_back: Sequence[Slot], name: str, *args: Any) -> Any:
        """`_run`, with request slots given back first in the same round trip."""
        if not give_back:
            return self._run(name, *args)
        [answer] = self._run_in_order([(name, args)], give_back)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def give_back_slots(self, slots: Sequence[Slot]) -> None:
        """Give back request slots (`(provider, token)`: see lua/slot.lua) in a round trip
        of their own: a request outside a bulk push, or a push whose completion, which gives
        them back in its own, did not come (an error on the way)."""
        if slots:
            pipe = self.redis.pipeline(transaction=False)
            self._give_back_in(pipe, slots)
            pipe.execute()

    def _give_back_in(self, pipe: Any, slots: Sequence[Slot]) -> None:
        # A plain ZREM: no script's fixed cost.
        for provider, token in slots:
            pipe.zrem(self.key("slots", provider), token)

    def _run_replicated(self, name: str, args: list[Any], replication: Replication | None) -> Any:
        """A script's answer (`args`: all of them, see `argv`), given only once `replication`
        counts enough replicas holding its write, when it is set: the WAIT follows the script
        on the same connection (a pipeline), after the fence (Replication.wait_in); on any
        other it would not count this write. ReplicationError (a RedisError) when too few."""
        script = self._scripts[name]
        if replication is None:
            return script(keys=[], args=args)
        pipe = self.redis.pipeline(transaction=False)
        script(keys=[], args=args, client=pipe)
        replication.wait_in(pipe, self.key(FENCE))
        answer, _, acked = pipe.execute()
        replication.check(int(acked))
        return answer

    def ping(self) -> bool:
        return bool(self.redis.ping())
