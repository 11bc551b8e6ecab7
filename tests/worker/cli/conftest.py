"""CLI fixtures: every test's data dir (the CLI's log file among it) in its own folder; a
second terminal, with no provider's credentials, beside a worker that has announced its
targets in the same Redis."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest

from tests.conftest import FakeClock, make_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.server import mock_transport
from tests.fakes.voicenter import FakeVoicenter
from worker.pipeline.context import Context
from worker.providers import SETTINGS
from worker.runtime import wiring
from worker.runtime.wiring import build_context


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTOUT_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


@pytest.fixture
def bare_cli(
    ctx: Context,
    redis_fake: fakeredis.FakeRedis,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Context]:
    """The CLI's context in a terminal whose environment enables no provider, on the Redis
    where `ctx` (a worker with Voicenter's credentials) has announced its targets; a
    terminal 80 columns wide, and stdout a pipe (CliRunner's)."""
    ctx.ensure_registered(force=True)
    for cls in SETTINGS.values():
        for variable in cls.env_names().values():
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    here = build_context(
        make_settings({}),
        client=redis_fake,
        http=httpx.Client(transport=mock_transport(fake_voicenter.handle)),
        dispatcher=dispatcher,
        clock=clock,
        rng=random.Random(7),
    )
    assert here.providers == {}
    cli_builds(here, monkeypatch)
    yield here
    wiring.reset()


def cli_builds(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures the wiring from the environment; it then builds `ctx`."""
    monkeypatch.setenv("REDIS_URL", "redis://unused.invalid:1/0")
    monkeypatch.setattr(wiring, "build_context", lambda *_, **__: ctx)
    monkeypatch.setattr(wiring, "_settings", None)


@pytest.fixture
def cli_ctx(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """The CLI on the test's context, with Voicenter's credentials."""
    monkeypatch.setenv("VOICENTER_API_CODE", "good-code")
    cli_builds(ctx, monkeypatch)
    yield ctx
    wiring.reset()
