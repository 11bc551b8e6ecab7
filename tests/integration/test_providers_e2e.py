"""All five providers end to end: real Redis, real workers, each fake served over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from config import load_settings
from tests.fakes.base import FakeProvider
from tests.fakes.phonely import FakePhonely
from tests.fakes.providers import CALL, env_for, make_fake
from tests.fakes.server import LoopbackServer
from tests.integration.conftest import ROOT, wait_for
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.celery_app import celery_dispatcher
from worker.runtime.wiring import build_context

pytestmark = pytest.mark.integration
NAMES = ("voicenter", "phonely", "voodoosms", "weya", "daktela")


@pytest.fixture
def fakes() -> Iterator[dict[str, tuple[FakeProvider, str]]]:
    with ExitStack() as stack:
        out = {}
        for name in NAMES:
            fake = make_fake(name)
            server = stack.enter_context(LoopbackServer(fake.handle))
            out[name] = (fake, server.url)
        yield out


def provider_env(fakes: dict[str, tuple[FakeProvider, str]], *names: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in names:
        env.update(env_for(name, fakes[name][1]))
    return env


def producer_for(env: dict[str, str]) -> Context:
    settings = load_settings(env)
    return build_context(settings, dispatcher=celery_dispatcher(settings))


def test_one_call_linked_opt_out_reaches_all_five_in_their_formats(
    env: dict[str, str], fakes: Any, start_worker: Any
) -> None:
    full = {**env, **provider_env(fakes, *NAMES)}
    start_worker(**full)
    ctx = producer_for(full)
    accept(ctx, Event("dnc", Action.ADD, [PhoneInput("0501234567")], context=CALL))
    expected = {"voicenter": 1, "phonely": 2, "voodoosms": 1, "weya": 1, "daktela": 1}

    def everywhere() -> bool:
        return all(
            fakes[n][0].numbers_sent().count("972501234567") >= count
            for n, count in expected.items()
        )

    wait_for(everywhere, timeout=60, what="all five providers")
    daktela = fakes["daktela"][0]
    (record,) = daktela.records.values()
    assert record["number"] == "+972501234567"
    phonely = fakes["phonely"][0]
    assert phonely.listed("agent-a") == phonely.listed("agent-b") == {"972501234567"}
    assert fakes["voodoosms"][0].listed() == {"972501234567"}
    assert fakes["weya"][0].listed() == {"972501234567"}
    assert ctx.store.dead_letters() == []


def test_a_new_phonely_agent_is_backfilled_after_a_restart(
    env: dict[str, str], fakes: Any, start_worker: Any
) -> None:
    phonely_env = {**env, **provider_env(fakes, "phonely")}
    worker = start_worker(**phonely_env)
    ctx = producer_for(phonely_env)
    blocked = [f"+97250{i:07d}" for i in range(500)]
    accept(ctx, Event("crm", Action.ADD, [PhoneInput(n) for n in blocked]))
    fake: FakePhonely = fakes["phonely"][0]
    wait_for(lambda: len(fake.listed("agent-b")) == 500, timeout=60, what="first two agents")
    worker.stop()

    start_worker(**{**phonely_env, "PHONELY_AGENT_IDS": "agent-a,agent-b,agent-c"})
    wait_for(lambda: len(fake.listed("agent-c")) == 500, timeout=60, what="agent-c backfilled")
    assert fake.listed("agent-c") == {n[1:] for n in blocked}


def test_a_wrong_key_pauses_and_resume_delivers_everything_staged(
    env: dict[str, str], fakes: Any, start_worker: Any, tmp_path: Any
) -> None:
    fake: FakeProvider = fakes["voodoosms"][0]
    fake.key = "new-key"  # the key was rotated at VoodooSMS; ours is the old one
    old = {**env, **provider_env(fakes, "voodoosms")}
    worker = start_worker(**old)
    ctx = producer_for(old)
    batch = [f"+97250{i:07d}" for i in range(20)]
    accept(ctx, Event("sms", Action.ADD, [PhoneInput(n) for n in batch]))
    wait_for(lambda: "voodoosms" in ctx.store.paused(), timeout=30, what="provider paused")
    assert ctx.store.dead_letters() == []
    assert fake.listed() == set()
    worker.stop()

    fixed = {**old, "VOODOOSMS_API_KEY": "new-key"}
    start_worker(**fixed)
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "provider", "resume", "voodoosms"],
        env={**os.environ, **fixed},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed" in result.stdout
    wait_for(lambda: fake.listed() == {n[1:] for n in batch}, timeout=60, what="delivered")
    assert ctx.store.dead_letters() == []
