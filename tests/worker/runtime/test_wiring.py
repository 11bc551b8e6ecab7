"""Per-process wiring: the cached context follows the settings and is never shared across a
fork."""

from __future__ import annotations

from typing import Any

import httpx
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
    built = wiring._context  # built at once, before the process takes a task
    assert built is not None and built is not parents
    assert wiring.context() is built
    wiring.reset()


def test_a_context_that_cannot_be_built_at_a_process_start_is_built_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wiring, "_settings", None)
    wiring.configure(load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    real = wiring.build_context

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("not yet")

    monkeypatch.setattr(wiring, "build_context", broken)
    worker_process_init.send(sender=None)  # does not raise: the process still starts
    assert wiring._context is None
    monkeypatch.setattr(wiring, "build_context", real)
    assert wiring.context() is not None
    wiring.reset()


def test_every_provider_client_of_a_process_shares_one_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(
        {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "VOICENTER_API_CODE": "code",
            "VOODOOSMS_API_KEY": "key",
        }
    )
    made: list[object] = []
    create = httpx.create_ssl_context

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return create(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    ctx = wiring.build_context(settings)
    assert len(ctx.providers) >= 2
    assert len(made) == 1
