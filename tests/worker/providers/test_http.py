"""Retry-After parsing: seconds and HTTP-dates."""

from __future__ import annotations

from worker.providers.http import parse_retry_after


def test_seconds() -> None:
    assert parse_retry_after("120") == 120.0


def test_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_garbage_and_absent() -> None:
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0
