"""Webhooks through the real API in-process: tokens, CDRs (JSON and form), DNC triggers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from tests.worker.ingress.test_cdr import fixture
from worker.ingress.api import create_api
from worker.pipeline.context import Context
from worker.runtime.embedded import free_port
from worker.runtime.wiring import build_context

TOKENS = "voicenter:vc-old,voicenter:vc-new,dnc:dnc-token"
VC = {"Authorization": "Bearer vc-new"}
DNC = {"X-Webhook-Token": "dnc-token"}


@pytest.fixture(params=["thread", "event-loop"])
def hook_ctx(make_ctx: Any, request: pytest.FixtureRequest) -> Context:
    """Each webhook test runs both ways an accept can go: through a worker thread, and
    awaited on the event loop (once a process has registered its targets)."""
    ctx: Context = make_ctx(
        aio=request.param == "event-loop",
        webhook_tokens=TOKENS,
        voicenter_optout_dtmf="9",
        voicenter_optout_layers="optout",
        own_numbers="0722776772",
        admin_token="admin",
    )
    if ctx.async_accept:
        ctx.ensure_registered()
    return ctx


@pytest.fixture
def client(hook_ctx: Context) -> TestClient:
    return TestClient(create_api(lambda: hook_ctx))


def ledger_size(ctx: Context) -> int:
    return len(list(ctx.store.redis.scan_iter(match=ctx.store.key("num", "*"))))


def test_outbound_cdr_optout_is_pushed_as_digits(
    client: TestClient,
    hook_ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
) -> None:
    response = client.post("/webhooks/voicenter/cdr", json=fixture("cdr_outbound.json"), headers=VC)
    assert response.status_code == 200
    assert response.json()["Err"] == 0
    assert response.json()["Errdesc"] == "OK"
    dispatcher.drain(hook_ctx)
    assert fake_voicenter.pushed() == [["972501234567"]]
    audit = hook_ctx.store.audit("+972501234567")[-1]
    assert audit["ctx"]["callId"] == "2020072818dcDHFJcc804"
    assert audit["ctx"]["layer"] == "optout"
    assert audit["src"] == "voicenter"


def test_the_callers_own_number_is_never_blocked(client: TestClient, hook_ctx: Context) -> None:
    client.post("/webhooks/voicenter/cdr", json=fixture("cdr_outbound.json"), headers=VC)
    assert hook_ctx.store.ledger("+972722776772") == {}
    assert hook_ctx.store.ledger("+972501234567")["s"] == "blocked"


def test_form_encoded_inbound_queue_cdr(client: TestClient, hook_ctx: Context) -> None:
    cdr = fixture("cdr_inbound_queue.json")
    form = {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in cdr.items()}
    response = client.post(
        "/webhooks/voicenter/cdr",
        content=urlencode(form),
        headers={**VC, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["Err"] == 0, response.text
    assert hook_ctx.store.ledger("+972527654321")["s"] == "blocked"


def test_a_cdr_that_is_not_an_optout_is_acknowledged_and_not_queued(
    client: TestClient, hook_ctx: Context, dispatcher: QueueDispatcher
) -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["IVR"] = []
    response = client.post("/webhooks/voicenter/cdr", json=cdr, headers=VC)
    assert response.status_code == 200
    assert response.json()["Err"] == 0
    assert ledger_size(hook_ctx) == 0
    assert dispatcher.sent == []
    assert hook_ctx.store.counts_of("voicenter_cdr") == {"not_an_optout": 1}


def test_the_same_call_twice_is_pushed_once(
    client: TestClient,
    hook_ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
) -> None:
    for _ in range(2):
        assert (
            client.post(
                "/webhooks/voicenter/cdr", json=fixture("cdr_outbound.json"), headers=VC
            ).json()["Err"]
            == 0
        )
    dispatcher.drain(hook_ctx)
    assert fake_voicenter.pushed() == [["972501234567"]]


def test_an_unknown_call_type_is_kept_for_review(client: TestClient, hook_ctx: Context) -> None:
    cdr = fixture("cdr_outbound.json")
    cdr["type"] = "Conference"
    response = client.post("/webhooks/voicenter/cdr", json=cdr, headers=VC)
    assert response.json()["Err"] == 0
    assert response.json()["review"] == "unknown_call_type"
    assert ledger_size(hook_ctx) == 0
    (kept,) = hook_ctx.store.reviews("voicenter")
    assert kept["cdr"]["ivruniqueid"] == cdr["ivruniqueid"]


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'{"caller": "1"}', b"\xff\xfe"])
def test_an_unparseable_cdr_is_err_1_and_nothing_queued(
    client: TestClient, hook_ctx: Context, body: bytes
) -> None:
    response = client.post(
        "/webhooks/voicenter/cdr", content=body, headers={**VC, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["Err"] == 1
    assert ledger_size(hook_ctx) == 0


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"Authorization": "Bearer wrong"}, ""),
        ({"Authorization": "Bearer dnc-token"}, ""),  # another source's token
        ({}, "?token=dnc-token"),
    ],
)
def test_a_missing_or_wrong_token_is_401_and_nothing_queued(
    client: TestClient, hook_ctx: Context, headers: dict[str, str], query: str
) -> None:
    response = client.post(
        "/webhooks/voicenter/cdr" + query, json=fixture("cdr_outbound.json"), headers=headers
    )
    assert response.status_code == 401
    assert ledger_size(hook_ctx) == 0


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": "Bearer vc-old"}, ""),  # both tokens valid during a rotation
        ({"X-Webhook-Token": "vc-new"}, ""),
        ({}, "?token=vc-new"),
    ],
)
def test_every_token_carrier_works(client: TestClient, headers: dict[str, str], query: str) -> None:
    response = client.post(
        "/webhooks/voicenter/cdr" + query, json=fixture("cdr_outbound.json"), headers=headers
    )
    assert response.json()["Err"] == 0


def test_an_oversized_cdr_is_413(make_ctx: Any) -> None:
    ctx = make_ctx(webhook_tokens=TOKENS, max_body_bytes=4096)
    client = TestClient(create_api(lambda: ctx))
    cdr = {**fixture("cdr_outbound.json"), "padding": "x" * 10_000}
    assert client.post("/webhooks/voicenter/cdr", json=cdr, headers=VC).status_code == 413


@pytest.mark.parametrize("registered", [False, True], ids=["thread", "event-loop"])
def test_redis_down_is_503_err_2(registered: bool) -> None:
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        webhook_tokens=TOKENS,
        voicenter_optout_dtmf="9",
    )
    ctx = build_context(settings, dispatcher=QueueDispatcher())
    ctx.registered = registered  # registered: the accept is awaited on the event loop
    client = TestClient(create_api(lambda: ctx))
    response = client.post("/webhooks/voicenter/cdr", json=fixture("cdr_outbound.json"), headers=VC)
    assert response.status_code == 503
    assert response.json()["Err"] == 2


def test_dnc_trigger_end_to_end(
    client: TestClient,
    hook_ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
) -> None:
    body = {"phoneNumber": "12125551234", "batchId": "b-1", "requestUUID": "r-1"}
    body["type"] = "complaint"
    response = client.post("/webhooks/dnc", json=body, headers=DNC)
    assert response.status_code == 202, response.text
    assert response.json()["phone"]["phone"] == "+12125551234"
    again = client.post("/webhooks/dnc", json=body, headers=DNC)
    assert again.json()["duplicate"] is True
    dispatcher.drain(hook_ctx)
    assert fake_voicenter.pushed() == [["12125551234"]]
    ledger = hook_ctx.store.ledger("+12125551234")
    assert json.loads(ledger["c"]) == {"batchId": "b-1", "requestUUID": "r-1", "type": "complaint"}


def test_dnc_trigger_missing_fields_are_named(client: TestClient) -> None:
    response = client.post("/webhooks/dnc", json={"phoneNumber": "12125551234"}, headers=DNC)
    assert response.status_code == 422
    fields = {p["field"] for p in response.json()["problems"]}
    assert {"body.batchId", "body.requestUUID"} <= fields


def test_dnc_trigger_needs_its_own_token(client: TestClient, hook_ctx: Context) -> None:
    body = {"phoneNumber": "12125551234", "batchId": "b", "requestUUID": "r"}
    assert client.post("/webhooks/dnc", json=body, headers=VC).status_code == 401
    assert client.post("/webhooks/dnc", json={}, headers={}).status_code == 401
    assert ledger_size(hook_ctx) == 0


def test_openapi_documents_every_endpoint_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/optouts", "/v1/numbers/{phone}", "/webhooks/voicenter/cdr", "/webhooks/dnc",
                 "/healthz", "/readyz"):  # fmt: skip
        assert path in spec["paths"], path
    cdr = spec["paths"]["/webhooks/voicenter/cdr"]["post"]["requestBody"]["content"]
    assert cdr["application/json"]["example"]["ivruniqueid"]
    assert spec["components"]["schemas"]["DncTrigger"]["examples"]
    assert spec["components"]["schemas"]["OptoutRequest"]["examples"]
