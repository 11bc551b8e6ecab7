"""The store on a real Redis (the scripts run as in production), under a key prefix of each
test's own, with the fake clock of tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import FakeClock
from tests.real_redis import RealRedis
from worker.state.store import Store


@pytest.fixture(scope="session")
def real_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(RealRedis.url())
    yield client
    client.close()
    RealRedis.stop()


@pytest.fixture
def store(real_redis: redis.Redis, clock: FakeClock) -> Iterator[Store]:
    prefix = f"optout-state-{uuid.uuid4().hex[:12]}:"
    yield Store(real_redis, prefix=prefix, clock=clock, audit_cap=20)
    keys = list(real_redis.scan_iter(match=prefix + "*", count=1000))
    if keys:
        real_redis.delete(*keys)
