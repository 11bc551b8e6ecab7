"""Metrics scraped and parsed after a run; logs captured with no full number and no token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import structlog
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from tests.processes import CLI, ROOT
from tests.worker.ingress.test_cdr import fixture
from worker.ingress.api import create_api
from worker.runtime.logs import scrub

AUTH = {"Authorization": "Bearer admin"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_run(
    make_ctx: Any, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    ctx = make_ctx(admin_token="admin")
    client = TestClient(create_api(lambda: ctx))
    before = samples(client.get("/metrics").text)
    fake_voicenter.permanent.add("972501111113")
    body = {"action": "add", "phones": ["+972501111111", "+972501111112", "+972501111113", "x"]}
    assert client.post("/v1/optouts", json=body, headers=AUTH).status_code == 202
    client.post("/v1/optouts", json={"action": "remove", "phones": ["1"]}, headers=AUTH)
    dispatcher.drain(ctx)
    after = samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("optout_events_total", source="api", outcome="accepted") == 1
    assert delta("optout_events_total", source="api", outcome="remove_needs_occurred_at") == 1
    assert delta("optout_numbers_rejected_total", source="api", reason="contains_letters") == 1
    assert delta("optout_numbers_pushed_total", provider="voicenter", outcome="done") == 2
    assert delta("optout_numbers_pushed_total", provider="voicenter", outcome="permanent") == 1
    assert delta("optout_batch_size_count", provider="voicenter") == 1
    assert delta("optout_provider_request_seconds_count", provider="voicenter") == 1
    assert delta("optout_propagation_seconds_count", provider="voicenter") == 2
    assert value(after, "optout_dead_letters") == 1
    assert value(after, "optout_redis_up") == 1


def test_logs_never_hold_a_full_number_or_a_token(
    make_ctx: Any, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    ctx = make_ctx(
        admin_token="admin-secret-token",
        webhook_tokens="voicenter:hook-secret-token",
        voicenter_optout_dtmf="9",
    )
    client = TestClient(create_api(lambda: ctx))
    fake_voicenter.flaky["972501111112"] = 1
    with structlog.testing.capture_logs() as events:
        client.post("/v1/optouts", json={"action": "add", "phones": ["+972501111112"]},
                    headers={"Authorization": "Bearer admin-secret-token"})  # fmt: skip
        client.post(
            "/webhooks/voicenter/cdr?token=hook-secret-token", json=fixture("cdr_outbound.json")
        )
        dispatcher.drain(ctx)
    text = repr(events)
    assert events
    for secret in ("972501111112", "972501234567", "0501234567", "secret-token", "good-code"):
        assert secret not in text, secret
    assert any(e.get("event") == "number_failed" for e in events)
    assert any(e.get("path") == "/webhooks/voicenter/cdr" for e in events)


def test_the_last_line_of_defence_masks_and_drops() -> None:
    event = scrub(None, "info", {"event": "x", "detail": "failed for 972501234567", "token": "t"})
    assert event == {"event": "x", "detail": "failed for 972501***4567", "token": "***"}


def test_audit_lines_hold_each_number_masked_a_hundred_per_line(make_ctx: Any) -> None:
    from worker.pipeline.accept import Event, PhoneInput, accept, phone_hash
    from worker.providers.base import Action

    ctx = make_ctx()
    phones = [f"+97250{i:07d}" for i in range(250)]
    with structlog.testing.capture_logs() as events:
        result = accept(ctx, Event("crm", Action.ADD, [PhoneInput(p) for p in phones]))
    lines = [e for e in events if e["event"] == "audit"]
    assert [len(line["numbers"]) for line in lines] == [100, 100, 50]
    assert {line["event_id"] for line in lines} == {result.event_id}
    logged = [n for line in lines for n in line["numbers"]]
    assert [n["phone_sha256"] for n in logged] == [phone_hash(p) for p in phones]
    assert all(n["phone"].startswith("+97250***") and n["ledger"] == "applied" for n in logged)
    assert not any(p[1:] in repr(lines) for p in phones)


_WRITER = """
import sys
from worker.runtime.logs import configure
import structlog
configure("json")
log = structlog.get_logger("t")
for i in range(3000):
    log.info("line", writer=sys.argv[1], i=i, pad="x" * 200)
"""


def test_processes_sharing_an_unbuffered_stderr_never_merge_lines(tmp_path: Path) -> None:
    # As in the container image (PYTHONUNBUFFERED=1) and under Celery's prefork children:
    # several processes, one stderr. Every line must stay one JSON object.
    out = tmp_path / "shared.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with out.open("ab") as sink:
        writers = [
            subprocess.Popen([sys.executable, "-c", _WRITER, name], stderr=sink, env=env)
            for name in ("a", "b", "c")
        ]
        assert all(w.wait(timeout=120) == 0 for w in writers)
    lines = out.read_text().splitlines()
    assert len(lines) == 9000
    records = [json.loads(line) for line in lines]
    assert {(r["writer"], r["i"]) for r in records} == {(w, i) for w in "abc" for i in range(3000)}


_STDLIB = """
import logging
import structlog
from worker.runtime.logs import configure
configure("auto")  # stderr is a pipe here: JSON
structlog.get_logger("optout.t").warning("ours")
logging.getLogger("celery.x").warning("call %s failed", "+972501234567",
                                      extra={"token": "hook-secret-token"})
try:
    raise RuntimeError("no answer for 972501234567")
except RuntimeError:
    logging.getLogger("kombu.y").exception("lost")
# Below the WARNING these two are held at:
logging.getLogger("httpx").info("GET /lookup?phone=972501234567")
logging.getLogger("celery.app.trace").info("Task optout.sweep succeeded")
"""


def test_stdlib_records_come_out_as_our_lines_masked() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STDLIB], capture_output=True, text=True, check=True, timeout=60
    )
    ours, celery, kombu = (json.loads(line) for line in done.stderr.splitlines())
    assert celery == {
        "event": "call +97250***4567 failed",
        "level": "warning",
        "logger": "celery.x",
        "timestamp": celery["timestamp"],
    }
    assert set(celery) == set(ours) == {"event", "level", "logger", "timestamp"}
    assert ours["logger"] == "optout.t"
    assert kombu["level"] == "error" and kombu["logger"] == "kombu.y"
    assert "RuntimeError: no answer for 972501***4567" in kombu["exception"]
    for secret in ("972501234567", "hook-secret-token"):
        assert secret not in done.stderr, secret


def test_a_worker_writes_only_json_lines_to_stderr(tmp_path: Path) -> None:
    # Celery installs its own plain-text handlers unless told otherwise (the root logger,
    # the task logger, billiard's pool logger): every one of those lines must be ours too.
    env = {
        **os.environ,
        "CELERY_BROKER_URL": "memory://",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # refused at once: the announce line warns
        "OPTOUT_DATA_DIR": str(tmp_path / "data"),
        "OPTOUT_LOG_FORMAT": "auto",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    err = tmp_path / "worker.err"

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in err.read_text().splitlines()]

    def wait_for_logger(name: str) -> None:
        deadline = time.monotonic() + 60
        while not any(r["logger"] == name for r in records()):
            assert worker.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)

    with err.open("wb") as sink:
        worker = subprocess.Popen(
            [*CLI, "worker", "--concurrency", "1"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=sink, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_logger("celery.apps.worker")  # "... ready."
        wait_for_logger("optout.worker")  # announce_failed
        # A pool process killed outright: billiard's own logger reports it.
        for child in psutil.Process(worker.pid).children():
            child.kill()
        wait_for_logger("multiprocessing")
    finally:
        # Not SIGTERM: on the memory transport a worker that lost a pool process never
        # finishes its warm shutdown (it does on Redis), and the lines are all written.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)
    assert {tuple(sorted(r)) for r in records() if "error" not in r} == {
        ("event", "level", "logger", "timestamp")
    }


def test_metrics_show_the_blocked_count_each_catch_up_and_expiries_due(
    make_ctx: Any, clock: Any
) -> None:
    import datetime as dt

    from worker.pipeline import batching as work
    from worker.pipeline.accept import Event, PhoneInput, accept
    from worker.providers.base import Action

    ctx = make_ctx(admin_token="admin")
    client = TestClient(create_api(lambda: ctx))
    numbers = [f"+97250{(i * 109) % 32768:07d}" for i in range(300)]  # spread over the index
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n) for n in numbers]))
    soon = dt.datetime.fromtimestamp(clock.now + 60, tz=dt.UTC)
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972521111111")], expires_at=soon))
    ctx.store.register_targets({"phonely:agent-a": {"provider": "phonely"}}, 600)
    ctx.directory(refresh=True)
    work.backfill(ctx, page=100)
    clock.advance(61)

    scraped = samples(client.get("/metrics").text)

    assert value(scraped, "optout_blocked_numbers") == 301
    assert value(scraped, "optout_expiry_due_numbers") == 1  # the sweep has yet to lift it
    ratio = value(scraped, "optout_catch_up_done_ratio", target="phonely:agent-a", stage="blocked")
    assert 0 < ratio < 1
    assert ("optout_catch_up_done_ratio", (("stage", "blocked"), ("target", "voicenter"))) not in (
        scraped
    )
