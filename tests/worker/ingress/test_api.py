"""The HTTP API in-process: auth, 202/409/422/413/503, lookups, health."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tests.fakes.dispatch import QueueDispatcher
from worker.ingress.api import create_api
from worker.ops.views import DEAD_LETTER_EXAMPLE, NUMBER_EXAMPLE
from worker.pipeline.context import Context
from worker.runtime.embedded import free_port
from worker.runtime.wiring import build_context

TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["thread", "event-loop"])
def api_ctx(make_ctx: Any, request: pytest.FixtureRequest) -> Context:
    """Each API test runs both ways an accept can go: through a worker thread, and awaited
    on the event loop (once a process has registered its targets)."""
    ctx: Context = make_ctx(aio=request.param == "event-loop", admin_token=TOKEN)
    if ctx.async_accept:
        ctx.ensure_registered()
    return ctx


@pytest.fixture
def client(api_ctx: Context) -> TestClient:
    return TestClient(create_api(lambda: api_ctx))


def test_post_optouts_answers_202_with_per_phone_results(
    client: TestClient, api_ctx: Context
) -> None:
    body = {
        "action": "add",
        "phones": ["+972501234567", {"phone": "0521234567", "name": "D"}, "x1"],
    }
    response = client.post("/v1/optouts", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["accepted"] == 2
    assert data["rejected"] == 1
    assert data["phones"][2] == {"input": "x1", "status": "rejected", "reason": "contains_letters"}
    assert api_ctx.store.ledger("+972521234567")["n"] == "D"


def test_missing_or_wrong_token_is_401_and_nothing_is_stored(
    client: TestClient, api_ctx: Context
) -> None:
    body = {"action": "add", "phones": ["+972501234567"]}
    assert client.post("/v1/optouts", json=body).status_code == 401
    assert (
        client.post("/v1/optouts", json=body, headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    assert api_ctx.store.ledger("+972501234567") == {}


def test_admin_api_is_off_without_a_token(make_ctx: Any) -> None:
    ctx = make_ctx()
    client = TestClient(create_api(lambda: ctx))
    response = client.post("/v1/optouts", json={"action": "add", "phones": ["1"]}, headers=AUTH)
    assert response.status_code == 503
    assert "OPTOUT_ADMIN_TOKEN" in response.json()["message"]


def test_same_key_other_body_is_409(client: TestClient) -> None:
    body = {"action": "add", "phones": ["+972501234567"], "idempotency_key": "k"}
    first = client.post("/v1/optouts", json=body, headers=AUTH)
    again = client.post("/v1/optouts", json=body, headers=AUTH)
    assert again.status_code == 202
    assert again.json()["duplicate"] is True
    assert again.json()["event_id"] == first.json()["event_id"]
    body["phones"] = ["+972501234568"]
    assert client.post("/v1/optouts", json=body, headers=AUTH).status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"action": "remove", "phones": ["+972501234567"]},  # no occurred_at
        {"action": "block", "phones": ["+972501234567"]},
        {"action": "add", "phones": []},
        {"action": "add"},
        {"action": "add", "phones": ["+972501234567"], "occurred_at": "yesterday"},
        {"action": "add", "phones": ["+972501234567"], "occurred_at": "0001-01-01T00:00:00"},
        {"action": "add", "phones": ["+972501234567"], "surprise": 1},
        {"action": "add", "phones": [None]},
        {"action": "add", "phones": ["abc"]},
        {"action": "add", "phones": ["+972501234567"], "source": "a:b"},
        [1, 2, 3],
        "just a string",
    ],
)
def test_bad_input_is_422_with_a_reason(client: TestClient, body: Any) -> None:
    response = client.post("/v1/optouts", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]


def test_an_add_with_an_unset_clock_names_occurred_at(client: TestClient) -> None:
    body = {"action": "add", "phones": ["+972501234567"], "occurred_at": "0001-01-01T00:00:00"}
    response = client.post("/v1/optouts", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"] == "occurred_at_out_of_range"
    assert "occurred_at" in response.json()["message"]


def test_malformed_json_is_4xx_never_500(client: TestClient) -> None:
    response = client.post(
        "/v1/optouts", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500


def test_oversized_body_is_413(make_ctx: Any) -> None:
    ctx = make_ctx(admin_token=TOKEN, max_body_bytes=2048)
    client = TestClient(create_api(lambda: ctx))
    body = {"action": "add", "phones": ["+972501234567"] * 500}
    response = client.post("/v1/optouts", json=body, headers=AUTH)
    assert response.status_code == 413


def test_too_many_phones_is_413(make_ctx: Any) -> None:
    ctx = make_ctx(admin_token=TOKEN, max_phones_per_request=3)
    client = TestClient(create_api(lambda: ctx))
    body = {"action": "add", "phones": ["+972501234567"] * 4}
    assert client.post("/v1/optouts", json=body, headers=AUTH).status_code == 413


@pytest.mark.parametrize("registered", [False, True], ids=["thread", "event-loop"])
def test_redis_down_is_503_and_nothing_claimed(registered: bool) -> None:
    settings = make_settings(admin_token=TOKEN, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    ctx = build_context(settings, dispatcher=QueueDispatcher())
    ctx.registered = registered  # registered: the accept is awaited on the event loop
    client = TestClient(create_api(lambda: ctx))
    response = client.post(
        "/v1/optouts", json={"action": "add", "phones": ["+972501234567"]}, headers=AUTH
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "event_id" not in response.json()
    assert client.get("/readyz").status_code == 503
    # Every other route that reads Redis says so the same way, not with a bare 500.
    for method, path in (
        ("GET", "/v1/numbers/+972501234567"),
        ("GET", "/v1/dead-letters"),
        ("GET", "/v1/reviews"),
        ("POST", "/v1/dead-letters/replay"),
    ):
        answer = client.request(method, path, headers=AUTH, json={"all": True})
        assert answer.status_code == 503, (method, path, answer.text)
        assert answer.json()["error"] == "store_unavailable"
        assert answer.headers["Retry-After"]


def test_number_lookup_shows_state_audit_and_providers(
    client: TestClient, api_ctx: Context
) -> None:
    client.post("/v1/optouts", json={"action": "add", "phones": ["0501234567"]}, headers=AUTH)
    response = client.get("/v1/numbers/+972501234567", headers=AUTH)
    assert response.status_code == 200
    view = response.json()
    assert view["state"] == "blocked"
    assert view["providers"]["voicenter"]["staged"] == "add"
    assert view["audit"][0]["action"] == "add"
    assert view["audit"][0]["at"] == "2027-01-15T08:00:00Z"  # the test clock, as ISO 8601
    assert client.get("/v1/numbers/abc", headers=AUTH).status_code == 422
    assert client.get("/v1/numbers/+972501234567").status_code == 401


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/optouts" in spec["paths"]


def test_openapi_shows_the_documented_shapes(client: TestClient) -> None:
    """The examples are the ones tests/worker/ops/test_views.py holds the real views to."""
    paths = client.get("/openapi.json").json()["paths"]

    def example(path: str) -> Any:
        return paths[path]["get"]["responses"]["200"]["content"]["application/json"]["example"]

    assert example("/v1/numbers/{phone}") == NUMBER_EXAMPLE
    assert example("/v1/dead-letters")["items"] == [DEAD_LETTER_EXAMPLE]


def test_an_input_beyond_64_bits_is_answered_not_a_500(client: TestClient) -> None:
    body = {"action": "add", "phones": [10**30, "+972501234567"]}
    response = client.post("/v1/optouts", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["phones"][0] == {"input": 10**30, "status": "rejected",
                                            "reason": "too_long"}  # fmt: skip


def test_unknown_paths_and_methods_answer_in_the_documented_shape(client: TestClient) -> None:
    missing = client.get("/v1/nothing-here", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "not found"}
    wrong = client.delete("/v1/optouts", headers=AUTH)
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


def test_a_form_body_is_told_to_send_json(client: TestClient) -> None:
    # What `curl -d` sends unless told otherwise.
    answer = client.post(
        "/v1/optouts",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        content=b"action=add&phones=0501234567",
    )
    assert answer.status_code == 422
    assert answer.json()["message"] == "send the body as JSON, with Content-Type: application/json"


def test_the_access_log_of_an_error_names_its_word_never_its_body(client: TestClient) -> None:
    import structlog

    with structlog.testing.capture_logs() as events:
        client.post("/v1/optouts", json={"action": "add", "phones": ["0501234567"]})
        client.post("/v1/optouts", headers=AUTH, json={"action": "add", "phones": ["0501234567"]})
    lines = [e for e in events if e["event"] == "http"]
    assert [(e["status"], e.get("error")) for e in lines] == [(401, "unauthorized"), (202, None)]
    assert all("0501234567" not in str(e) for e in lines)


def test_openapi_documents_the_bearer_token_and_every_v1_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"].lower() for s in schemes.values()] == ["bearer"]
    for path, item in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in item.items():
            assert op.get("security"), (method, path)
            assert {"401", "503"} <= set(op["responses"]), (method, path)


def test_the_token_is_read_from_a_bearer_header_of_any_case(client: TestClient) -> None:
    phone = {"action": "add", "phones": ["0501234567"]}
    lower = {"Authorization": f"bearer {TOKEN}"}
    assert client.post("/v1/optouts", json=phone, headers=lower).status_code == 202
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert client.post("/v1/optouts", json=phone, headers=basic).status_code == 401
