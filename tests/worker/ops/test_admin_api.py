"""Ops endpoints: dead letters (list, replay, purge), reviews, scrub, export."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from worker.ingress.api import create_api
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

AUTH = {"Authorization": "Bearer admin"}


@pytest.fixture
def ops(make_ctx: Any) -> Context:
    return make_ctx(admin_token="admin")  # type: ignore[no-any-return]


@pytest.fixture
def client(ops: Context) -> TestClient:
    return TestClient(create_api(lambda: ops))


def dead_letter(
    ops: Context, dispatcher: QueueDispatcher, fake: FakeVoicenter, *phones: str
) -> None:
    for p in phones:
        fake.permanent.add(p[1:])
    accept(ops, Event("api", Action.ADD, [PhoneInput(p) for p in phones]))
    dispatcher.drain(ops)


def test_list_filter_and_paginate(
    client: TestClient, ops: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    dead_letter(ops, dispatcher, fake_voicenter, "+972501111111", "+972501111112", "+972501111113")
    page = client.get("/v1/dead-letters?limit=2", headers=AUTH).json()
    assert page["total"] == 3
    assert len(page["items"]) == 2
    rest = client.get("/v1/dead-letters?limit=2&offset=2", headers=AUTH).json()
    assert len(rest["items"]) == 1
    one = client.get("/v1/dead-letters?phone=%2B972501111112", headers=AUTH).json()
    assert [i["phone"] for i in one["items"]] == ["+972501111112"]
    national = client.get("/v1/dead-letters?phone=050-111-1112", headers=AUTH).json()
    assert [i["id"] for i in national["items"]] == ["voicenter:+972501111112"]
    assert national["items"][0]["first_at"] == "2027-01-15T08:00:00Z"  # ISO, not epoch ms
    bad = client.get("/v1/dead-letters?phone=hello", headers=AUTH)
    assert bad.status_code == 422
    assert bad.json()["error"] == "contains_letters"
    assert client.get("/v1/dead-letters?provider=nope", headers=AUTH).json()["total"] == 0
    assert client.get("/v1/dead-letters?reason=bad_format", headers=AUTH).json()["total"] == 3
    assert client.get("/v1/dead-letters").status_code == 401


def test_replay_by_id_with_dry_run_then_for_real(
    client: TestClient, ops: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    dead_letter(ops, dispatcher, fake_voicenter, "+972501111111", "+972501111112")
    fake_voicenter.permanent.clear()
    entry = "voicenter:+972501111111"
    for given in (entry, "voicenter|+972501111111", "voicenter:0501111111"):
        dry = client.post(
            "/v1/dead-letters/replay", json={"ids": [given], "dry_run": True}, headers=AUTH
        )
        assert dry.json() == {"dry_run": True, "matched": 1, "replayed": 0, "ids": [entry]}
    for bad in ("voicenter", "voicenter:hello"):
        refused = client.post("/v1/dead-letters/purge", json={"ids": [bad]}, headers=AUTH)
        assert refused.status_code == 422, bad
        assert bad in refused.json()["message"]
    national = {"phone": "0501111112", "dry_run": True}
    assert client.post("/v1/dead-letters/purge", json=national, headers=AUTH).json()["matched"] == 1
    assert client.post("/v1/dead-letters/replay", json={}, headers=AUTH).status_code == 422
    for empty in ({"provider": ""}, {"reason": ""}, {"older_than_seconds": 0}, {"ids": []}):
        # An empty value chooses nothing (as in the CLI): it must not take every entry.
        answer = client.post("/v1/dead-letters/purge", json=empty, headers=AUTH)
        assert answer.status_code == 422, empty
    assert len(ops.store.dead_letters()) == 2
    for _ in range(2):  # twice: pushed once
        assert client.post("/v1/dead-letters/replay", json={"ids": [entry], "who": "dana"},
                           headers=AUTH).json()["replayed"] == 1  # fmt: skip
    dispatcher.drain(ops)
    assert fake_voicenter.numbers_sent().count("972501111111") == 2  # the failure, the replay
    remaining = client.get("/v1/dead-letters", headers=AUTH).json()
    assert [i["id"] for i in remaining["items"]] == ["voicenter:+972501111112"]
    audit = ops.store.audit("+972501111111")
    assert any(a.get("act") == "replay" and a.get("by") == "api:dana" for a in audit)


def test_purge_is_audited(
    client: TestClient, ops: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    dead_letter(ops, dispatcher, fake_voicenter, "+972501111111", "+972501111112")
    one = client.delete("/v1/dead-letters/voicenter:0501111112", headers=AUTH)  # national
    assert one.json() == {"purged": 1}
    purged = client.post("/v1/dead-letters/purge", json={"all": True}, headers=AUTH).json()
    assert purged["purged"] == 1
    assert ops.store.dead_letters() == []
    assert ops.store.audit("+972501111111")[0]["act"] == "purge"
    for gone in ("voicenter:+972501111111", "voicenter|+972501111111"):
        answer = client.delete(f"/v1/dead-letters/{gone}", headers=AUTH)
        assert answer.status_code == 404
        assert answer.json()["message"] == "no dead letter voicenter:+972501111111"
    assert client.delete("/v1/dead-letters/voicenter", headers=AUTH).status_code == 422


def test_scrub_answers_which_are_blocked(
    client: TestClient, ops: Context, clock: FakeClock
) -> None:
    accept(ops, Event("api", Action.ADD, [PhoneInput("+972501111111")]))
    body = {"phones": ["0501111111", "+972501111112", "nope", 972501111111]}
    result = client.post("/v1/scrub", json=body, headers=AUTH).json()
    assert result["blocked"] == [
        {"input": "0501111111", "phone": "+972501111111"},
        {"input": "972501111111", "phone": "+972501111111"},
    ]
    assert result["dialable"] == 1
    assert result["dialable_phones"] == [{"input": "+972501111112", "phone": "+972501111112"}]
    assert result["rejected"] == [{"input": "nope", "reason": "contains_letters"}]
    too_many = {"phones": ["1"] * 10_001}
    assert client.post("/v1/scrub", json=too_many, headers=AUTH).status_code == 422


def test_export_streams_the_blocked_list(client: TestClient, ops: Context) -> None:
    phones = [f"+97250{i:07d}" for i in range(2500)]
    accept(ops, Event("api", Action.ADD, [PhoneInput(p) for p in phones]))
    response = client.get("/v1/export", headers=AUTH)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["phone", "expires_at_ms", "updated_ms"]
    assert sorted(r[0] for r in rows[1:]) == phones


@pytest.fixture
def reviewing(make_ctx: Any) -> Context:
    from tests.worker.ops.test_reviews import REVIEW_SETTINGS

    return make_ctx(**REVIEW_SETTINGS, admin_token="admin")  # type: ignore[no-any-return]


def test_reviews_are_listed_shown_accepted_and_dropped(
    reviewing: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    from tests.worker.ops.test_reviews import keep

    client = TestClient(create_api(lambda: reviewing))
    first = keep(reviewing, type="Conference", caller="0527654321")
    second = keep(reviewing, direction="internal", ivruniqueid="call-2")
    assert client.get("/v1/reviews").status_code == 401

    page = client.get("/v1/reviews", headers=AUTH).json()
    assert (page["total"], page["waiting"]) == (2, {"voicenter": 2})
    assert [i["id"] for i in page["items"]] == [first, second]
    assert page["items"][0]["phones"] == ["+972501234567", "+972527654321"]
    assert "input" not in page["items"][0]
    assert client.get("/v1/reviews?source=dnc", headers=AUTH).json()["total"] == 0
    shown = client.get(f"/v1/reviews/{first}", headers=AUTH).json()
    assert shown["input"]["ivruniqueid"] == "2020072818dcDHFJcc804"

    unsure = client.post(f"/v1/reviews/{first}/accept", json={}, headers=AUTH)
    assert unsure.status_code == 422
    assert unsure.json()["error"] == "choose_phone"
    accepted = client.post(f"/v1/reviews/{first}/accept", headers=AUTH,
                           json={"phone": "0527654321", "who": "dana"})  # fmt: skip
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["phone"] == "+972527654321"
    assert accepted.json()["ledger"] == "applied"
    (entry,) = [e for e in reviewing.store.audit("+972527654321") if "ev" in e]
    assert entry["ctx"]["by"] == "api:dana"
    dispatcher.drain(reviewing)
    assert fake_voicenter.pushed() == [["972527654321"]]

    dropped = client.post(f"/v1/reviews/{second}/drop", json={"note": "test call"},
                          headers=AUTH)  # fmt: skip
    assert dropped.json() == {"id": second, "dropped": True}
    assert [(r["outcome"], r["by"]) for r in reviewing.store.reviewed("voicenter")] == [
        ("dropped", "api:api"), ("accepted", "api:dana"),
    ]  # fmt: skip
    assert client.get("/v1/reviews", headers=AUTH).json()["total"] == 0


def test_review_refusals_answer_in_the_documented_shape(reviewing: Context) -> None:
    from tests.worker.ops.test_reviews import keep

    client = TestClient(create_api(lambda: reviewing))
    case = keep(reviewing, type="Conference")
    for path in ("/v1/reviews/voicenter-000000000000", "/v1/reviews/nope"):
        missing = client.get(path, headers=AUTH)
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        assert client.post(f"{path}/drop", headers=AUTH).status_code == 404
        assert client.post(f"{path}/accept", json={"phone": "0501234567"},
                           headers=AUTH).status_code == 404  # fmt: skip
    bad = client.post(f"/v1/reviews/{case}/accept", json={"phone": "201"}, headers=AUTH)
    assert bad.status_code == 422
    assert bad.json() == {"error": "too_short",
                          "message": "'201' is not a customer's number: too_short"}  # fmt: skip
    assert client.post(f"/v1/reviews/{case}/accept", json={"phone": "0501234567",
                       "extra": 1}, headers=AUTH).status_code == 422  # fmt: skip
    assert reviewing.store.ledger("+972501234567") == {}
    assert len(client.get("/v1/reviews", headers=AUTH).json()["items"]) == 1


def test_accepting_a_number_the_cdr_does_not_hold_is_422_not_a_candidate(
    reviewing: Context,
) -> None:
    from tests.worker.ops.test_reviews import keep

    client = TestClient(create_api(lambda: reviewing))
    case = keep(reviewing, type="Conference", caller="0527654321")
    refused = client.post(f"/v1/reviews/{case}/accept", json={"phone": "0561111111"},
                          headers=AUTH)  # fmt: skip
    assert refused.status_code == 422
    body = refused.json()
    assert set(body) == {"error", "message"} and body["error"] == "not_a_candidate"
    assert "+972501234567, +972527654321" in body["message"]
    assert reviewing.store.ledger("+972561111111") == {}
    assert client.get("/v1/reviews", headers=AUTH).json()["total"] == 1
    # The OpenAPI document names the refusal beside choose_phone.
    spec = client.get("/openapi.json").json()
    answers = spec["paths"]["/v1/reviews/{review_id}/accept"]["post"]["responses"]["422"]
    examples = answers["content"]["application/json"]["examples"]
    assert {e["value"]["error"] for e in examples.values()} == {"choose_phone", "not_a_candidate"}
    assert "not_a_candidate" in answers["description"]


def test_review_routes_answer_503_while_redis_is_down() -> None:
    from tests.conftest import make_settings
    from worker.runtime.embedded import free_port
    from worker.runtime.wiring import build_context

    settings = make_settings(admin_token="admin", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    down = build_context(settings, dispatcher=QueueDispatcher())
    client = TestClient(create_api(lambda: down))
    for answer in (
        client.get("/v1/reviews", headers=AUTH),
        client.get("/v1/reviews/voicenter-000000000000", headers=AUTH),
        client.post("/v1/reviews/voicenter-000000000000/accept", json={"phone": "0501234567"},
                    headers=AUTH),
        client.post("/v1/reviews/voicenter-000000000000/drop", headers=AUTH),
    ):  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "store_unavailable"
        assert answer.headers["Retry-After"]


def test_reviews_waiting_and_settled_are_metrics(reviewing: Context) -> None:
    from tests.worker.ops.test_reviews import keep
    from tests.worker.runtime.test_observability import samples, value

    client = TestClient(create_api(lambda: reviewing))
    for call in ("a", "b", "c"):
        keep(reviewing, type="Conference", ivruniqueid=call)
    first, second, _ = (c["id"] for c in client.get("/v1/reviews", headers=AUTH).json()["items"])
    # No body: the case's only candidate, by "api".
    assert client.post(f"/v1/reviews/{first}/accept", headers=AUTH).status_code == 200
    assert client.post(f"/v1/reviews/{second}/drop", headers=AUTH).status_code == 200

    scraped = samples(client.get("/metrics").text)

    assert value(scraped, "optout_reviews_waiting", source="voicenter") == 1
    assert value(scraped, "optout_reviews_total", source="voicenter", outcome="accepted") == 1
    assert value(scraped, "optout_reviews_total", source="voicenter", outcome="dropped") == 1
