"""End to end: HTTP accept -> real Redis -> real Celery worker -> fake Voicenter on loopback."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes.voicenter import ADD, REMOVE, FakeVoicenter
from tests.integration.conftest import wait_for
from worker.ingress.api import create_api
from worker.pipeline.context import Context

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer admin-secret"}


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+97250{i:07d}" for i in range(start, start + count)]


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


@pytest.fixture
def api(producer: Context) -> TestClient:
    return TestClient(create_api(lambda: producer))


@pytest.fixture
def fake(fake_voicenter_server: tuple[FakeVoicenter, str]) -> FakeVoicenter:
    return fake_voicenter_server[0]


def post(api: TestClient, action: str, phones: list[Any], **extra: Any) -> Any:
    response = api.post(
        "/v1/optouts", json={"action": action, "phones": phones, **extra}, headers=AUTH
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_250_numbers_reach_voicenter_in_exactly_three_requests(
    api: TestClient, fake: FakeVoicenter, start_worker: Any
) -> None:
    start_worker()
    post(api, "add", numbers(250))
    wait_for(lambda: len(fake.blacklist) == 250, what="250 numbers blacklisted")
    time.sleep(1.0)  # anything extra would show up now
    sizes = sorted((len(r) for r in fake.pushed()), reverse=True)
    assert sizes == [100, 100, 50]
    assert all(n.startswith("972") and n.isdigit() for r in fake.pushed() for n in r)


def test_retry_dead_letter_and_replay(
    api: TestClient, fake: FakeVoicenter, producer: Context, start_worker: Any
) -> None:
    flaky, bad = "972500000001", "972500000002"
    fake.permanent.add(bad)
    fake.flaky[flaky] = 1
    start_worker()
    post(api, "add", numbers(5))
    wait_for(lambda: flaky in fake.blacklist and producer.store.dead_letters(), what="retry + DLQ")
    assert [len(r) for r in fake.pushed()][:2] == [5, 1]  # only the failed number retried
    dead = producer.store.dead_letters()
    assert [(d["phone"], d["reason"]) for d in dead] == [("+" + bad, "bad_format")]
    assert bad not in fake.blacklist

    fake.permanent.clear()
    response = api.get(f"/v1/numbers/+{bad}", headers=AUTH)
    assert response.json()["providers"]["voicenter"]["dead_letter"]["reason"] == "bad_format"
    from worker.pipeline.batching import replay

    replay(producer, [d["id"] for d in dead], "test")
    wait_for(lambda: bad in fake.blacklist, what="replayed number delivered")
    wait_for(lambda: producer.store.dead_letters() == [], what="dead letter cleared")


def test_idempotent_keys_and_stale_removes(
    api: TestClient, fake: FakeVoicenter, start_worker: Any
) -> None:
    start_worker()
    n = "+972500000009"
    body = {"idempotency_key": "call-1"}
    first = post(api, "add", [n], **body)
    assert post(api, "add", [n], **body)["event_id"] == first["event_id"]
    conflict = api.post(
        "/v1/optouts", json={"action": "add", "phones": ["+972500000008"], **body}, headers=AUTH
    )
    assert conflict.status_code == 409

    t2 = datetime.now(UTC) - timedelta(seconds=5)
    other = "+972500000010"
    post(api, "add", [other], occurred_at=iso(t2))
    post(api, "remove", [other], occurred_at=iso(t2 - timedelta(seconds=60)))  # older: loses
    wait_for(lambda: {n[1:], other[1:]} <= fake.blacklist, what="both blocked")
    time.sleep(1.0)
    assert fake.pushed(REMOVE) == []
    assert sum(r.count(n[1:]) for r in fake.pushed()) == 1


def test_interleaved_adds_and_removes_with_a_slow_provider_and_a_killed_worker(
    api: TestClient, fake: FakeVoicenter, producer: Context, start_worker: Any
) -> None:
    fake.delay = 0.2
    batch = numbers(200, start=1000)
    rng = random.Random(11)
    worker = start_worker()
    base = datetime.now(UTC) - timedelta(minutes=10)
    for step in range(60):
        chosen = rng.sample(batch, 40)
        when = iso(base + timedelta(seconds=step))
        if rng.random() < 0.5:
            post(api, "add", chosen, occurred_at=when)
        else:
            post(api, "remove", chosen, occurred_at=when)
        if step == 25:
            wait_for(lambda: fake.requests, what="first request")
            worker.kill()
            worker = start_worker()
        time.sleep(0.02)

    def settled() -> bool:
        for n in batch:
            state = producer.store.ledger(n).get("s")
            if state is None:
                continue
            if (n[1:] in fake.blacklist) != (state == "blocked"):
                return False
        counts = producer.store.counts(["voicenter"])["voicenter"]
        return not any(counts.values())

    wait_for(settled, timeout=90, what="provider state equal to the ledger")
    assert producer.store.dead_letters() == []


def test_a_chunk_in_flight_when_its_worker_is_killed_is_recovered(
    api: TestClient, fake: FakeVoicenter, producer: Context, start_worker: Any
) -> None:
    fake.delay = 2.0
    worker = start_worker()
    batch = numbers(50, start=5000)
    post(api, "add", batch)
    wait_for(lambda: producer.store.counts(["voicenter"])["voicenter"]["in_flight"] == 50,
             what="chunk in flight")  # fmt: skip
    time.sleep(0.3)  # the request is on the wire
    worker.kill()
    fake.delay = 0.0
    start_worker()

    def confirmed() -> bool:
        view = producer.store.provider_view
        return all(view(n, ["voicenter"])["voicenter"]["confirmed"] == "blocked:1" for n in batch)

    wait_for(confirmed, timeout=60, what="recovered chunk confirmed")
    assert len(fake.blacklist) == 50
    assert len(fake.requests) >= 2  # the killed request, then the recovered chunk
    assert producer.store.counts(["voicenter"])["voicenter"]["in_flight"] == 0
    assert all(path == ADD for _, path, _ in fake.requests)
