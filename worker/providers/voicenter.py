"""Voicenter blacklist adapter (AddBlackList / RemoveBulkFromBlacklist).

The API (its documentation, "Voicenter Blacklist"): Numbers are E.164 digits without `+`;
top-level ErrorCode 1 = bad Code (auth), 2 = Phones missing/invalid (whole chunk);
per phone 0 ok, 1 bad format (permanent), 2 internal error (retryable).
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from config.types import BaseUrl, ProviderSettings
from worker.domain.phones import NumberFormat, digits, render
from worker.providers.base import Action, Capabilities, NumberResult, Outcome, PushItem
from worker.providers.errors import AuthError, PermanentError, RetryableError
from worker.providers.http import json_body, send

ADD_PATH = "/Blacklist/AddBlackList"
REMOVE_PATH = "/Blacklist/RemoveBulkFromBlacklist"
AUTH_SETTING = "VOICENTER_API_CODE (or the Voicenter IP allow-list for this host's address)"

_PHONE_CODES = {
    0: NumberResult(Outcome.DONE),
    1: NumberResult(Outcome.PERMANENT, "bad_format"),
    2: NumberResult(Outcome.RETRY, "provider_internal_error"),
}


class VoicenterSettings(ProviderSettings):
    """VOICENTER_*: the API code turns Voicenter on."""

    model_config = SettingsConfigDict(env_prefix="VOICENTER_")
    credential: ClassVar[str] = "api_code"

    api_code: SecretStr | None = None
    base_url: BaseUrl = "https://api.voicenter.com"


class VoicenterProvider:
    """Voicenter's organisation blacklist: one list, bulk add and remove."""

    name = "voicenter"
    capabilities = Capabilities(
        max_batch=100, supports_remove=True, number_format=NumberFormat.DIGITS
    )

    def __init__(self, api_code: str, base_url: str, client: httpx.Client) -> None:
        self._code = api_code
        self._base = base_url.rstrip("/")
        self._client = client

    def targets(self) -> list[str]:
        return [self.name]

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        path = ADD_PATH if action is Action.ADD else REMOVE_PATH
        phones: list[dict[str, Any]] = []
        for item in items:
            entry: dict[str, Any] = {"Phone": render(item.e164, self.capabilities.number_format)}
            if action is Action.ADD and item.name:
                entry["Name"] = item.name
            phones.append(entry)
        body = self._call(path, phones)
        return self._per_phone(items, body)

    def probe(self) -> None:
        # An empty Phones list is refused with code 2 when the Code is good and 1 when it is
        # not: a check of the credentials that changes nothing.
        try:
            self._call(ADD_PATH, [])
        except PermanentError as exc:
            if isinstance(exc, AuthError):
                raise

    def _call(self, path: str, phones: list[dict[str, Any]]) -> dict[str, Any]:
        response = send(
            self._client,
            "POST",
            self._base + path,
            auth_setting=AUTH_SETTING,
            json={"Code": self._code, "Phones": phones},
        )
        if response.status_code >= 400:
            raise PermanentError(f"http_{response.status_code}", response.text[:200])
        body = json_body(response)
        if not isinstance(body, dict):
            raise RetryableError("unreadable_answer", "answer is not a JSON object", outage=True)
        code = body.get("ErrorCode")
        message = str(body.get("ErrorMessage", ""))
        if code == 1:
            raise AuthError("bad_api_code", message, setting=AUTH_SETTING)
        if code == 2:
            raise PermanentError("phones_rejected", message)
        if code != 0:
            raise RetryableError(
                "unexpected_error_code", f"ErrorCode={code!r} {message}", may_land=True
            )
        return body

    def _per_phone(self, items: list[PushItem], body: dict[str, Any]) -> dict[str, NumberResult]:
        answered: dict[str, NumberResult] = {}
        for entry in body.get("Phones") or []:
            if not isinstance(entry, dict):
                continue
            key = digits(str(entry.get("Phone", "")))
            code = entry.get("ErrorCode")
            known = _PHONE_CODES.get(code) if isinstance(code, int) else None
            message = str(entry.get("ErrorMessage", ""))
            if known is None:
                answered[key] = NumberResult(
                    Outcome.RETRY, "unexpected_phone_code", f"{code!r}", may_land=True
                )
            else:
                answered[key] = NumberResult(known.outcome, known.reason, message)
        # Sent, and not reported on: it may be carried out yet.
        missing = NumberResult(
            Outcome.RETRY, "not_in_answer", "the answer did not mention it", may_land=True
        )
        return {item.e164: answered.get(digits(item.e164), missing) for item in items}


def from_settings(settings: VoicenterSettings, client: httpx.Client) -> VoicenterProvider | None:
    """The adapter, or None when no API code is set."""
    if not settings.enabled or settings.api_code is None:
        return None
    return VoicenterProvider(settings.api_code.get_secret_value(), settings.base_url, client)
