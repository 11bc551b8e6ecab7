"""Shared fixtures: settings, a fakeredis-backed pipeline and a fake Voicenter."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import httpx
import pytest
import structlog

from config import Settings, load_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.server import mock_transport
from tests.fakes.voicenter import FakeVoicenter
from worker.pipeline.context import Context
from worker.runtime.wiring import build_context


class FakeClock:
    """A settable clock for the store and pipeline."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


BASE_ENV = {
    "REDIS_URL": "redis://unused.invalid:1/0",
    "OPTOUT_RETRY_BASE_SECONDS": "1",
    "OPTOUT_RETRY_MAX_SECONDS": "8",
    # Each test's pipeline its own archive, in memory (one with the schema: archive_ready).
    "OPTOUT_ARCHIVE_URL": "sqlite://",
}


def make_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Test settings; by default only Voicenter is on, at http://voicenter.test."""
    if env is None:
        env = {"VOICENTER_API_CODE": "good-code", "VOICENTER_BASE_URL": "http://voicenter.test"}
    return load_settings({**BASE_ENV, **env}, **overrides)


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    # A command under test sets up logging for the whole process (logs.configure).
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_voicenter() -> FakeVoicenter:
    return FakeVoicenter()


@pytest.fixture
def dispatcher() -> QueueDispatcher:
    return QueueDispatcher()


def async_twin(
    client: fakeredis.FakeRedis, kind: type[fakeredis.FakeAsyncRedis] = fakeredis.FakeAsyncRedis
) -> Callable[[], fakeredis.FakeAsyncRedis]:
    """Asyncio clients (of `kind`) of the same fake Redis server as `client`."""
    kw = client.connection_pool.connection_kwargs
    return lambda: kind(host=kw["host"], port=kw["port"], db=kw["db"])


@pytest.fixture
def redis_fake() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.flushall()


@pytest.fixture
def make_ctx(
    redis_fake: fakeredis.FakeRedis,
    fake_voicenter: FakeVoicenter,
    dispatcher: QueueDispatcher,
    clock: FakeClock,
) -> Any:
    def make(*, aio: bool = False, **overrides: Any) -> Context:
        """aio: with an asyncio client on the same fake Redis (the API's event-loop path)."""
        http = httpx.Client(transport=mock_transport(fake_voicenter.handle))
        return build_context(
            make_settings(**overrides),
            client=redis_fake,
            http=http,
            dispatcher=dispatcher,
            clock=clock,
            rng=random.Random(7),
            async_client=async_twin(redis_fake) if aio else None,
        )

    return make


@pytest.fixture
def ctx(make_ctx: Any) -> Context:
    return make_ctx()  # type: ignore[no-any-return]
