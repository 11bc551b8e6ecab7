"""What holds pushes back: request slots, pauses, Retry-After holds, circuit breakers; and
the turns that keep a scheduled task from running twice at once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

from worker.state.auditlog import AuditLog
from worker.state.codec import decode, ms, text
from worker.state.keyspace import Slot


class Limits(AuditLog):
    """`slots:*`, `rate:*`, `paused`, `hold:*`, `breaker:*` and `turn:*`."""

    def acquire_slot(
        self,
        provider: str,
        token: str,
        *,
        rps: float,
        concurrency: int,
        lease_seconds: float,
        renew: tuple[str, float] | None = None,
        give_back: Sequence[Slot] = (),
    ) -> int | None:
        """Take a request slot shared by every worker: 0 when taken, ms to wait when none is
        free, or minus the ms left while a Retry-After holds the provider. `renew`: (chunk
        id, lease seconds) of the push the request is for, its lease renewed first in the
        same round trip; None when that chunk is gone (the request must not be sent).
        `give_back`: slots the push's earlier requests are done with, given back first in
        the same round trip (whatever this one answers)."""
        chunk, chunk_lease = renew if renew is not None else ("", 0.0)
        answer = self._run_giving_back(
            give_back, "slot", provider, token, rps, concurrency, ms(lease_seconds), chunk,
            ms(chunk_lease),
        )  # fmt: skip
        return None if answer is None else int(answer)

    def pause(self, provider: str, reason: str, setting: str, detail: str) -> None:
        """Pause a provider for every worker; the archive records it."""
        info = {"reason": reason, "setting": setting, "detail": detail, "at": self.now_ms()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key("paused"), provider, json.dumps(info))
        self.audit_provider(provider, {"act": "pause", "rsn": reason, "det": detail}, pipe)
        pipe.execute()

    def resume(self, provider: str, who: str = "") -> bool:
        """Resume a paused provider; the archive records it (one not paused: no entry)."""
        return bool(self._run("resume", provider, who))

    def paused(self) -> dict[str, dict[str, Any]]:
        raw = cast(dict[Any, Any], self.redis.hgetall(self.key("paused")))
        return {text(k): decode(v) for k, v in raw.items()}

    def hold(self, provider: str, seconds: float) -> None:
        """Stop every worker pushing to a provider until a Retry-After has passed (the later
        end wins, atomically). The key holds the end time by this store's clock."""
        self._run("hold", provider, ms(seconds))

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
        info = {text(k): text(v) for k, v in raw.items()}
        if "opens" not in info:
            return None
        return {
            "opens": int(info["opens"]),
            "since_ms": int(info.get("since", 0)),
            "until_ms": int(info.get("until", 0)),
            "reason": info.get("reason", ""),
        }

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
