"""`optout worker` runs providers without a bulk endpoint in a group of their own: while
every one of their workers is stuck in a slow request, other providers' opt-outs still go
out (issue 13, item 14). The figure (delivery time under such a backlog) is the bench's."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import Answer, FakeProvider
from tests.fakes.providers import env_for, make_fake
from tests.fakes.server import LoopbackServer
from tests.integration.conftest import wait_for
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

pytestmark = pytest.mark.integration


@pytest.fixture
def stuck_voodoosms() -> Iterator[tuple[FakeProvider, threading.Event, str]]:
    fake = make_fake("voodoosms")
    release = threading.Event()

    def hang() -> Answer | None:
        release.wait(90)  # every request hangs until the test lets them go
        return None

    fake.chaos = hang
    with LoopbackServer(fake.handle) as server:
        yield fake, release, server.url
        release.set()


def test_a_stuck_per_number_provider_never_holds_up_a_bulk_one(
    env: dict[str, str],
    stuck_voodoosms: tuple[FakeProvider, threading.Event, str],
    fake_voicenter_server: Any,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    voodoo, release, url = stuck_voodoosms
    voicenter = fake_voicenter_server[0]
    # Requests that hang longer than the test waits for the Voicenter opt-out below.
    full = {**env, **env_for("voodoosms", url), "OPTOUT_HTTP_TIMEOUT_SECONDS": "45",
            "OPTOUT_LEASE_SECONDS": "120", "OPTOUT_PROVIDER_LIMITS": "voodoosms=0/64"}  # fmt: skip
    from config import load_settings
    from worker.runtime.celery_app import celery_dispatcher
    from worker.runtime.wiring import build_context

    settings = load_settings(full)
    producer: Context = build_context(settings, dispatcher=celery_dispatcher(settings))
    worker = start_worker(**full)
    log = tmp_path / "worker.log"
    wait_for(lambda: log.exists() and log.read_text().count(" ready.") >= 2, 60,
             "both worker groups ready")  # fmt: skip
    text = log.read_text()
    assert re.search(r"main-\d+@", text) and re.search(r"per-number-\d+@", text)

    # A backlog at VoodooSMS: more chunks than the per-number group has threads, each
    # request hanging.
    backlog = [f"+97253{i:07d}" for i in range(400)]
    accept(producer, Event("api", Action.ADD, [PhoneInput(p) for p in backlog]))
    wait_for(lambda: len(voodoo.requests) == 0 and producer.store.counts(["voodoosms"])
             ["voodoosms"]["in_flight"] > 0, 30, "VoodooSMS pushes under way")  # fmt: skip
    # While they hang, a new opt-out reaches Voicenter.
    n = "+972539999999"
    accept(producer, Event("api", Action.ADD, [PhoneInput(n)]))
    wait_for(lambda: n[1:] in voicenter.blacklist, 30, "the new opt-out at Voicenter")
    assert voodoo.requests == []  # and every VoodooSMS request still hangs
    assert n[1:] not in voodoo.listed()
    release.set()
    wait_for(lambda: n[1:] in voodoo.listed(), 120, "VoodooSMS caught up")
    worker.stop()
    assert worker.process is not None and worker.process.returncode is not None
