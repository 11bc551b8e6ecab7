"""VoodooSMS blacklist adapter: one number per request, bounded concurrency.

The API (its documentation, "VoodooSMS blacklist"): Bearer key; numbers are integers without
`+`. Add: POST /blacklist `{"number": n}`; error 53 (already listed) = done; 33 on an add
means "must be a number" (permanent). Remove: GET /blacklist?number=n for the id, then
DELETE /blacklist/{id}; 33 ("not in your blacklist") and 51 ("blacklist is empty") on that
lookup = already removed. Errors come as `{"error": {"code": n, "msg": "..."}}`.
Never use the GDPR "forget" endpoint: it purges the number from the blacklist too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from config.types import BaseUrl, ProviderSettings
from worker.domain.phones import NumberFormat, digits, render
from worker.providers.base import Action, Capabilities, NumberResult, Outcome, PushItem
from worker.providers.errors import PermanentError, RetryableError
from worker.providers.fanout import per_number
from worker.providers.http import request_json

PATH = "/blacklist"
AUTH_SETTING = "VOODOOSMS_API_KEY"
ALREADY_LISTED = 53
NOT_LISTED_OR_NOT_A_NUMBER = 33
LIST_EMPTY = 51
INVALID_ID = 23


class VoodooSmsSettings(ProviderSettings):
    """VOODOOSMS_*: the API key turns VoodooSMS on."""

    model_config = SettingsConfigDict(env_prefix="VOODOOSMS_")
    credential: ClassVar[str] = "api_key"

    api_key: SecretStr | None = None
    base_url: BaseUrl = "https://api.voodoosms.com"


class VoodooSmsProvider:
    """The account's one SMS blacklist."""

    name = "voodoosms"
    capabilities = Capabilities(
        max_batch=25,
        supports_remove=True,
        number_format=NumberFormat.INTEGER,
        bulk=False,
        concurrency=4,
    )

    def __init__(self, api_key: str, base_url: str, client: httpx.Client) -> None:
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._url = base_url.rstrip("/") + PATH
        self._client = client

    def targets(self) -> list[str]:
        return [self.name]

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        call = self._add if action is Action.ADD else self._remove
        return per_number(items, call, self.capabilities.concurrency)

    def _request(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        return request_json(
            self._client, method, url, auth_setting=AUTH_SETTING, headers=self._headers, **kwargs
        )

    def _add(self, item: PushItem) -> NumberResult:
        status, body = self._request(
            "POST", self._url, json={"number": render(item.e164, NumberFormat.INTEGER)}
        )
        code = _error_code(body)
        if code == ALREADY_LISTED:
            return NumberResult(Outcome.DONE, "already")
        if code == NOT_LISTED_OR_NOT_A_NUMBER:
            # On an add, 33 means "must be a number": a formatting problem, never "done".
            return NumberResult(Outcome.PERMANENT, "bad_format", _error_msg(body))
        return _plain(status, code, body)

    def _remove(self, item: PushItem) -> NumberResult:
        number = render(item.e164, NumberFormat.INTEGER)
        status, body = self._request("GET", self._url, params={"number": number})
        code = _error_code(body)
        if code in (NOT_LISTED_OR_NOT_A_NUMBER, LIST_EMPTY):
            return NumberResult(Outcome.DONE, "already")
        if code is not None or status >= 400:
            return _plain(status, code, body)
        entry_id = _find_id(body, digits(item.e164))
        if entry_id is None:
            # A lookup answered about some other entry, or none: it says nothing of ours.
            return NumberResult(Outcome.RETRY, "not_in_answer", "the lookup did not mention it")
        status, body = self._request("DELETE", f"{self._url}/{entry_id}")
        code = _error_code(body)
        if code == INVALID_ID:
            # Gone between lookup and delete (another worker, or ops): look it up again.
            return NumberResult(Outcome.RETRY, "invalid_id", _error_msg(body))
        return _plain(status, code, body)

    def probe(self) -> None:
        status, body = self._request("GET", self._url, params={"limit": 1})
        if status >= 400 and _error_code(body) not in (LIST_EMPTY,):
            raise PermanentError(f"http_{status}", _error_msg(body))

    def list_numbers(self, target: str) -> Iterator[str]:
        """Every listed number (for reconciliation), paged 1000 at a time as it is read."""
        skip = 0
        previous: list[Any] | None = None
        while True:
            status, body = self._request("GET", self._url, params={"skip": skip, "limit": 1000})
            if _error_code(body) == LIST_EMPTY:
                return
            if status >= 400:
                raise RetryableError(f"http_{status}", _error_msg(body))
            entries = _entries(body)
            if entries and entries == previous:
                # An API that ignores `skip` would have us list the first page for ever (on
                # the per-number worker group's thread).
                raise RetryableError("listing_not_paging", f"skip={skip} repeated a page")
            previous = entries
            yield from (str(e.get("number")) for e in entries if isinstance(e, dict))
            if len(entries) < 1000:
                return
            skip += 1000


def _error_code(body: Any) -> int | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return int(code) if isinstance(code, int | str) and str(code).isdigit() else -1
    return None


def _error_msg(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("msg", ""))
    return ""


def _plain(status: int, code: int | None, body: Any) -> NumberResult:
    if code is None and status < 400:
        if isinstance(body, dict) and str(body.get("status", "")).upper() == "SUCCESS":
            return NumberResult(Outcome.DONE)
        # A 2xx without the documented {"status": "SUCCESS"} (a proxy's page, another
        # shape): it confirms nothing.
        return NumberResult(Outcome.RETRY, "unconfirmed_answer", str(body)[:200], may_land=True)
    return NumberResult(Outcome.PERMANENT, f"error_{code}" if code else f"http_{status}",
                        _error_msg(body))  # fmt: skip


def _entries(body: Any) -> list[Any]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("blacklist", "data", "results"):
            if isinstance(body.get(key), list):
                return list(body[key])
        if "id" in body:
            return [body]
    return []


def _find_id(body: Any, wanted_digits: str) -> str | None:
    for entry in _entries(body):
        if isinstance(entry, dict) and digits(str(entry.get("number", ""))) == wanted_digits:
            return str(entry.get("id"))
    return None


def from_settings(settings: VoodooSmsSettings, client: httpx.Client) -> VoodooSmsProvider | None:
    """The adapter, or None when no API key is set."""
    if not settings.enabled or settings.api_key is None:
        return None
    return VoodooSmsProvider(settings.api_key.get_secret_value(), settings.base_url, client)
