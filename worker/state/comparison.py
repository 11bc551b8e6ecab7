"""A reconciliation's comparison, kept in Redis while it runs: what the ledger owes a provider
and what each of its lists holds, as sets by the blocked index's buckets, so that neither
side is ever held whole in a process (ten million numbers are ~1.5 GB as Python strings)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from worker.state.codec import text
from worker.state.keyspace import Keyspace
from worker.state.ledger import BLOCKED_BUCKETS, blocked_bucket

#: Until when a comparison's sets outlive a run that died (each write renews it): longer
#: than any listing takes, short enough that a crashed run's sets do not linger.
SCRATCH_TTL_SECONDS = 24 * 3600
#: Buckets compared a round trip at a time: at ten million numbers, ~300 each a side.
DIFF_BUCKETS = 64


class Buckets:
    """The buckets a comparison has written to, as a bitmap (4 KB whatever the size)."""

    def __init__(self) -> None:
        self._bits = bytearray(BLOCKED_BUCKETS // 8)

    def add(self, bucket: int) -> None:
        self._bits[bucket >> 3] |= 0x80 >> (bucket & 7)

    def __iter__(self) -> Iterator[int]:
        for i, byte in enumerate(self._bits):
            if byte:
                yield from (i * 8 + j for j in range(8) if byte & (0x80 >> j))

    def __len__(self) -> int:
        return sum(bin(byte).count("1") for byte in self._bits)


class Comparison(Keyspace):
    """`reconcile:{run}:want:{bucket}` (the digits of the numbers the ledger blocks and owes
    the provider) and `reconcile:{run}:has:{target}:{bucket}` (the digits a target's list
    holds), both expiring; a reconciliation compares them a bucket at a time."""

    def _want_key(self, run: str, bucket: int) -> str:
        return self.key("reconcile", run, "want", str(bucket))

    def _has_key(self, run: str, target: str, bucket: int) -> str:
        return self.key("reconcile", run, "has", target, str(bucket))

    def _add(self, keys: dict[str, list[str]]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for key, members in keys.items():
            pipe.sadd(key, *members)
            pipe.expire(key, SCRATCH_TTL_SECONDS)
        return sum(int(added) for added in pipe.execute()[::2])

    def want(self, run: str, numbers: Iterable[str], buckets: Buckets) -> None:
        """Add E.164 numbers the ledger blocks and owes the provider."""
        keys: dict[str, list[str]] = {}
        for n in numbers:
            bucket = blocked_bucket(n)
            buckets.add(bucket)
            keys.setdefault(self._want_key(run, bucket), []).append(n[1:])
        if keys:
            self._add(keys)

    def keep_wanted(self, run: str, buckets: Buckets) -> None:
        """Renew the want side's expiry: it is written once and compared with one target
        after another, and a run over several slow lists can outlast it."""
        chosen = list(buckets)
        for start in range(0, len(chosen), 512):
            pipe = self.redis.pipeline(transaction=False)
            for bucket in chosen[start : start + 512]:
                pipe.expire(self._want_key(run, bucket), SCRATCH_TTL_SECONDS)
            pipe.execute()

    def has(self, run: str, target: str, digits: Iterable[str], buckets: Buckets) -> int:
        """Add numbers (digits, none empty) a target's list holds; the count of those not
        added before (a list that repeats a number, or shifts under its paging, counts it
        once)."""
        keys: dict[str, list[str]] = {}
        for d in digits:
            bucket = blocked_bucket(d)
            buckets.add(bucket)
            keys.setdefault(self._has_key(run, target, bucket), []).append(d)
        return self._add(keys) if keys else 0

    def differences(
        self, run: str, target: str, buckets: Buckets
    ) -> Iterator[tuple[int, list[str], list[str]]]:
        """(buckets compared so far, E.164 numbers the ledger owes that the target's list
        lacks, numbers the list holds that the ledger does not owe it), a few buckets at a
        time; each bucket of the target's list is deleted once compared."""
        chosen = list(buckets)
        for start in range(0, len(chosen), DIFF_BUCKETS):
            pipe = self.redis.pipeline(transaction=False)
            for bucket in chosen[start : start + DIFF_BUCKETS]:
                want, has = self._want_key(run, bucket), self._has_key(run, target, bucket)
                pipe.sdiff([want, has])
                pipe.sdiff([has, want])
                pipe.delete(has)
            answers = pipe.execute()
            missing = ["+" + text(d) for found in answers[0::3] for d in found]
            extra = ["+" + text(d) for found in answers[1::3] for d in found]
            yield min(start + DIFF_BUCKETS, len(chosen)), missing, extra

    def drop_comparison(self, run: str, targets: Iterable[str], buckets: Buckets) -> None:
        """Delete a comparison's sets (its want side, and what is left of each target's)."""
        names = list(targets)
        chosen = list(buckets)
        for start in range(0, len(chosen), 512):
            keys = []
            for bucket in chosen[start : start + 512]:
                keys.append(self._want_key(run, bucket))
                keys.extend(self._has_key(run, t, bucket) for t in names)
            self.redis.delete(*keys)
