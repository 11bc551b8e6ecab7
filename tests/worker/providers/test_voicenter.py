"""The Voicenter adapter against the fake Voicenter over httpx.MockTransport."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.server import mock_transport
from tests.fakes.voicenter import FakeVoicenter
from worker.providers.base import Action, Outcome, PushItem
from worker.providers.errors import AuthError, PermanentError, RetryableError
from worker.providers.voicenter import VoicenterProvider


def adapter(fake: FakeVoicenter, code: str = "good-code") -> VoicenterProvider:
    client = httpx.Client(transport=mock_transport(fake.handle))
    return VoicenterProvider(code, "http://voicenter.test", client)


def items(*numbers: str) -> list[PushItem]:
    return [PushItem(n) for n in numbers]


def test_add_sends_digits_without_plus_and_maps_each_phone() -> None:
    fake = FakeVoicenter(permanent={"972501111112"})
    fake.flaky["972501111113"] = 1
    result = adapter(fake).push(
        "voicenter", Action.ADD, items("+972501111111", "+972501111112", "+972501111113")
    )
    assert fake.pushed() == [["972501111111", "972501111112", "972501111113"]]
    assert result["+972501111111"].outcome is Outcome.DONE
    assert result["+972501111112"].outcome is Outcome.PERMANENT
    assert result["+972501111112"].reason == "bad_format"
    assert result["+972501111113"].outcome is Outcome.RETRY


def test_remove_uses_the_bulk_remove_endpoint() -> None:
    fake = FakeVoicenter(lists={"default": {"972501111111"}})
    result = adapter(fake).push("voicenter", Action.REMOVE, items("+972501111111"))
    assert result["+972501111111"].outcome is Outcome.DONE
    assert fake.blacklist == set()


def test_a_phone_missing_from_the_answer_is_retried_not_done() -> None:
    def handler(*_: object) -> tuple[int, object, dict[str, str]]:
        return 200, {"ErrorCode": 0, "Phones": [{"Phone": "972501111111", "ErrorCode": 0}]}, {}

    client = httpx.Client(transport=mock_transport(handler))
    provider = VoicenterProvider("c", "http://v.test", client)
    result = provider.push("voicenter", Action.ADD, items("+972501111111", "+972501111112"))
    assert result["+972501111111"].outcome is Outcome.DONE
    assert result["+972501111112"].outcome is Outcome.RETRY
    assert result["+972501111112"].reason == "not_in_answer"
    assert result["+972501111112"].may_land  # sent, and not reported on


def test_bad_code_is_an_auth_error_naming_the_setting() -> None:
    with pytest.raises(AuthError) as caught:
        adapter(FakeVoicenter(), code="wrong").push("voicenter", Action.ADD, items("+972501111111"))
    assert "VOICENTER_API_CODE" in caught.value.setting


@pytest.mark.parametrize("status", [401, 403])
def test_http_auth_statuses_are_auth_errors(status: int) -> None:
    fake = FakeVoicenter(http_status=status, http_status_times=-1)
    with pytest.raises(AuthError):
        adapter(fake).push("voicenter", Action.ADD, items("+972501111111"))


def test_top_level_code_2_rejects_the_whole_chunk() -> None:
    def handler(*_: object) -> tuple[int, object, dict[str, str]]:
        return 200, {"ErrorCode": 2, "ErrorMessage": "Phones invalid"}, {}

    client = httpx.Client(transport=mock_transport(handler))
    with pytest.raises(PermanentError) as caught:
        VoicenterProvider("c", "http://v.test", client).push(
            "voicenter", Action.ADD, items("+972501111111")
        )
    assert not isinstance(caught.value, AuthError)


def test_5xx_is_retryable() -> None:
    fake = FakeVoicenter(http_status=503, http_status_times=-1)
    with pytest.raises(RetryableError) as caught:
        adapter(fake).push("voicenter", Action.ADD, items("+972501111111"))
    assert caught.value.reason == "http_503"


def test_429_carries_retry_after() -> None:
    fake = FakeVoicenter(http_status=429, http_status_times=-1, retry_after="7")
    with pytest.raises(RetryableError) as caught:
        adapter(fake).push("voicenter", Action.ADD, items("+972501111111"))
    assert caught.value.retry_after == 7.0


def test_timeout_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(RetryableError) as caught:
        VoicenterProvider("c", "http://v.test", client).push(
            "voicenter", Action.ADD, items("+972501111111")
        )
    assert caught.value.reason == "timeout"


def test_an_unreadable_answer_confirms_nothing() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    )
    with pytest.raises(RetryableError):
        VoicenterProvider("c", "http://v.test", client).push(
            "voicenter", Action.ADD, items("+972501111111")
        )


def test_probe_passes_with_a_good_code_and_fails_with_a_bad_one() -> None:
    adapter(FakeVoicenter()).probe()
    with pytest.raises(AuthError):
        adapter(FakeVoicenter(), code="wrong").probe()


def test_codes_nobody_expected_confirm_nothing_and_may_still_be_carried_out() -> None:
    def handler(*_: object) -> tuple[int, object, dict[str, str]]:
        phones = [{"Phone": "972501111111", "ErrorCode": 7}]
        return 200, {"ErrorCode": 0, "Phones": phones}, {}

    client = httpx.Client(transport=mock_transport(handler))
    provider = VoicenterProvider("c", "http://v.test", client)
    result = provider.push("voicenter", Action.ADD, items("+972501111111", "+972501111112"))
    odd = result["+972501111111"]
    assert (odd.outcome, odd.reason, odd.may_land) == (Outcome.RETRY, "unexpected_phone_code", True)

    def whole(*_: object) -> tuple[int, object, dict[str, str]]:
        return 200, {"ErrorCode": 9, "ErrorMessage": "?"}, {}

    client = httpx.Client(transport=mock_transport(whole))
    with pytest.raises(RetryableError) as raised:
        VoicenterProvider("c", "http://v.test", client).push(
            "voicenter", Action.ADD, items("+972501111111")
        )
    assert raised.value.reason == "unexpected_error_code" and raised.value.may_land
