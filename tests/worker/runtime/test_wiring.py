"""Per-process wiring: the cached context follows the settings and is never shared across a
fork."""

from __future__ import annotations

import pytest
from celery.signals import worker_process_init

from config import load_settings
from worker.runtime import wiring


def test_configure_forgets_the_context_built_for_other_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wiring, "_context", None)
    monkeypatch.setattr(wiring, "_settings", None)
    wiring.configure(load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    first = wiring.context()
    assert wiring.context() is first
    wiring.configure(load_settings({"REDIS_URL": "redis://127.0.0.1:1/1"}))
    second = wiring.context()
    assert second is not first
    assert second.settings.redis_url == "redis://127.0.0.1:1/1"
    wiring.reset()


def test_a_forked_worker_process_builds_its_own_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # Connections and HTTP clients must never be shared across a fork: the signal Celery
    # sends in each new pool process drops the parent's context.
    monkeypatch.setattr(wiring, "_settings", None)
    wiring.configure(load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    parents = wiring.context()
    worker_process_init.send(sender=None)
    assert wiring.context() is not parents
    wiring.reset()
