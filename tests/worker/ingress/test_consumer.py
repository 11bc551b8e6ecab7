"""Broker messages: which kind each is, and why a bad one is parked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.worker.ingress.test_cdr import fixture
from worker.ingress.consumer import RejectedMessageError, interpret
from worker.pipeline.context import Context


@pytest.fixture
def cctx(make_ctx: Any) -> Context:
    return make_ctx(voicenter_optout_dtmf="9")  # type: ignore[no-any-return]


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_an_optout_message(cctx: Context) -> None:
    event = interpret(cctx, raw({"action": "add", "phones": ["0501234567"]}), {}, False)
    assert event is not None
    assert event.source == "broker"
    assert [p.raw for p in event.phones] == ["0501234567"]


def test_a_cdr_message_by_field_and_by_header(cctx: Context) -> None:
    cdr = fixture("cdr_outbound.json")
    assert interpret(cctx, raw(cdr), {}, False) is not None
    event = interpret(cctx, raw(cdr), {"x-optout-kind": "cdr"}, False)
    assert event is not None and event.source == "voicenter"


def test_a_cdr_that_is_not_an_optout_needs_nothing(cctx: Context) -> None:
    cdr = {**fixture("cdr_outbound.json"), "IVR": []}
    assert interpret(cctx, raw(cdr), {}, False) is None


def test_a_dnc_trigger_message(cctx: Context) -> None:
    body = {"phoneNumber": "12125551234", "batchId": "b", "requestUUID": "r"}
    event = interpret(cctx, raw(body), {}, False)
    assert event is not None and event.context["batchId"] == "b"


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"\x00garbage", {}, "not_json"),
        (raw([1, 2]), {}, "not_a_json_object"),
        (raw({"hello": 1}), {}, "unknown_message"),
        (raw({"action": "add"}), {}, "invalid_optout"),
        (raw({"action": "add", "phones": ["1"]}), {"x-optout-kind": "bogus"}, "unknown_kind"),
        (raw({"ivruniqueid": "", "IVR": []}), {}, "unparseable_cdr"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(
    cctx: Context, body: bytes, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(RejectedMessageError) as caught:
        interpret(cctx, body, headers, False)
    assert caught.value.reason.startswith(reason)


def test_removes_need_allow_remove(cctx: Context) -> None:
    remove = {"action": "remove", "phones": ["+972501234567"], "occurred_at": "2026-01-01T00:00Z"}
    body = raw(remove)
    with pytest.raises(RejectedMessageError) as caught:
        interpret(cctx, body, {}, False)
    assert caught.value.reason.startswith("remove_not_allowed")
    assert interpret(cctx, body, {}, True) is not None


def test_a_cdr_of_unknown_type_is_kept_for_review_like_the_webhook_does(cctx: Context) -> None:
    cdr = {**fixture("cdr_outbound.json"), "type": "Conference"}
    assert interpret(cctx, raw(cdr), {}, False) is None
    (kept,) = cctx.store.reviews("voicenter")
    assert kept["reason"] == "unknown_call_type"
    assert cctx.store.counts_of("voicenter_cdr") == {"unknown_call_type": 1}


def test_a_redis_connection_survives_restarts_and_keeps_its_options() -> None:
    from worker.ingress.consumer import connect
    from worker.runtime.broker import Transport

    conn = connect("redis://127.0.0.1:1/3", key_prefix="t9:", visibility_timeout=30)
    assert isinstance(conn.transport, Transport)
    assert conn.port == 1 and conn.virtual_host == "3"
    assert conn.transport_options["visibility_timeout"] == 30
    assert conn.transport_options["global_keyprefix"] == "t9:ingress:"
    amqp = connect("amqp://guest:guest@127.0.0.1:5672//")
    assert not isinstance(amqp.transport, Transport)
    assert amqp.transport_options == {}
