"""schemathesis against the served OpenAPI: generated requests, never a 5xx."""

from __future__ import annotations

import fakeredis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import FakeClock, make_settings
from tests.fakes.dispatch import QueueDispatcher
from worker.ingress.api import create_api
from worker.runtime.wiring import build_context

TOKEN = "fuzz-admin"
PIPE = build_context(
    make_settings(
        admin_token=TOKEN,
        webhook_tokens="voicenter:fuzz-hook,dnc:fuzz-hook",
        voicenter_optout_dtmf="9",
    ),
    client=fakeredis.FakeRedis(),
    dispatcher=QueueDispatcher(),
    clock=FakeClock(),
)
APP = create_api(lambda: PIPE)
# /readyz answers 503 by contract when the broker is down (it is, here): fuzz the rest.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/readyz")


@pytest.fixture(autouse=True)
def _drop_queued_work() -> None:
    dispatcher = PIPE.dispatcher
    assert isinstance(dispatcher, QueueDispatcher)
    dispatcher.tasks.clear()


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx(case: schemathesis.Case) -> None:
    token = "fuzz-hook" if case.path.startswith("/webhooks") else TOKEN
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    case.call_and_validate(checks=[not_a_server_error])
