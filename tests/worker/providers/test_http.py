"""Retry-After parsing: seconds and HTTP-dates; which failed requests may still land."""

from __future__ import annotations

import httpx
import pytest

from worker.providers.errors import RetryableError
from worker.providers.http import parse_retry_after, send


def test_seconds() -> None:
    assert parse_retry_after("120") == 120.0


def test_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_garbage_and_absent() -> None:
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0


def _failing(error: Exception | None = None, status: int = 200) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if error is not None:
            raise error
        return httpx.Response(status, json={})

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("error", "status", "may_land"),
    [
        (httpx.ReadTimeout("slow"), 200, True),  # sent: the provider may still be at it
        (httpx.RemoteProtocolError("cut"), 200, True),
        (None, 503, True),
        (None, 502, True),
        (None, 429, False),  # refused, not started
        (httpx.ConnectTimeout("no route"), 200, False),  # never reached it
        (httpx.ConnectError("refused"), 200, False),
        (httpx.PoolTimeout("no free provider slot"), 200, False),
    ],
)
def test_a_failed_request_may_land_later_only_if_it_reached_the_provider(
    error: Exception | None, status: int, may_land: bool
) -> None:
    with pytest.raises(RetryableError) as raised:
        send(_failing(error, status), "POST", "http://p.test/x", auth_setting="KEY")
    assert raised.value.outage and raised.value.may_land is may_land
    # A lookup changes nothing: whatever became of it, nothing of it lands later.
    with pytest.raises(RetryableError) as raised:
        send(_failing(error, status), "GET", "http://p.test/x", auth_setting="KEY")
    assert not raised.value.may_land
