"""HTTP plumbing every adapter shares: transport errors, 429 + Retry-After, 5xx and auth."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from worker.pipeline import lease
from worker.providers.errors import AuthError, RetryableError
from worker.providers.ratelimit import LimitedClient


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    auth_setting: str,
    **kwargs: Any,
) -> httpx.Response:
    """Make one request; raise for what is not the adapter's to interpret.

    Renews the pushed chunk's lease first (a request whose chunk was recovered is not
    sent: `worker/pipeline/lease.py`); a LimitedClient's transport renews it itself, in the
    round trip that takes the request's slot. Returns 2xx and non-auth 4xx responses (the
    adapter reads vendor codes from them). Failures of the request as a whole (timeouts, connection
    errors, 429, 5xx) are outages: they say nothing about the numbers in it.
    """
    if not isinstance(client, LimitedClient):
        lease.renew()
    # Whether a request that failed may still be carried out later (RetryableError): one
    # that changes something, and reached the provider.
    changes = method.upper() != "GET"
    try:
        response = client.request(method, url, **kwargs)
    except (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError) as exc:
        # It never reached the provider (no connection, or no free slot).
        reason = "connection_error" if isinstance(exc, httpx.ConnectError) else "timeout"
        raise RetryableError(reason, type(exc).__name__, outage=True, may_land=False) from exc
    except httpx.TimeoutException as exc:
        raise RetryableError("timeout", type(exc).__name__, outage=True, may_land=changes) from exc
    except httpx.TransportError as exc:
        raise RetryableError(
            "connection_error", type(exc).__name__, outage=True, may_land=changes
        ) from exc
    except httpx.DecodingError as exc:
        # A body that does not match its Content-Encoding: a proxy's page, which answers
        # every request alike while it is in the way. It says nothing of the numbers: an
        # outage, like a 502 from the same proxy.
        raise RetryableError(
            "unreadable_answer", type(exc).__name__, outage=True, may_land=changes
        ) from exc
    status = response.status_code
    if status in (401, 403):
        raise AuthError(f"http_{status}", _snippet(response), setting=auth_setting)
    if status == 429 or status >= 500:
        raise RetryableError(
            "rate_limited" if status == 429 else f"http_{status}",
            _snippet(response),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            outage=True,
            may_land=changes and status != 429,  # a 429 was refused, not started
        )
    return response


def request_json(
    client: httpx.Client, method: str, url: str, *, auth_setting: str, **kwargs: Any
) -> tuple[int, Any]:
    """`send`, then the status and JSON body (`{}` when the body is empty)."""
    response = send(client, method, url, auth_setting=auth_setting, **kwargs)
    return response.status_code, json_body(response) if response.content else {}


def json_body(response: httpx.Response) -> Any:
    """The response's JSON, or an outage: an unreadable answer (a proxy's or a captive
    portal's page, which answers every request alike while it is in the way) confirms
    nothing and says nothing of the numbers in the request."""
    try:
        return response.json()
    except ValueError as exc:
        raise RetryableError("unreadable_answer", _snippet(response), outage=True) from exc


def _snippet(response: httpx.Response) -> str:
    text = response.text[:200]
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"
