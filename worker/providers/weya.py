"""Weya AI call-record DNC adapter: add only, one number per request, never twice.

The API (its documentation, "Weya AI call-record DNC"): POST {base}/api/dnc/add with
`{phoneNumber, batchId, requestUUID, type?}`; a number must be tied to a call record, so an
event without batchId + requestUUID is not sent here. 400 "already exists" = done; other 400
permanent; 404 may only mean the call record is not written yet: retried for a configurable
while, then dead-lettered. No remove endpoint. Each add emails the account admin, so a
number confirmed once is never pushed again (the pipeline treats add-only confirmations as
sticky).
"""

from __future__ import annotations

from typing import ClassVar

import httpx
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from config.types import BaseUrl, ProviderSettings
from worker.domain.phones import NumberFormat, render
from worker.providers.base import Action, Capabilities, NumberResult, Outcome, PushItem
from worker.providers.errors import PermanentError, RetryableError
from worker.providers.fanout import per_number
from worker.providers.http import json_body, send

PATH = "/api/dnc/add"
AUTH_SETTING = "WEYA_API_TOKEN"


class WeyaSettings(ProviderSettings):
    """WEYA_*: the API token turns Weya on; each deployment has its own base URL."""

    model_config = SettingsConfigDict(env_prefix="WEYA_")
    credential: ClassVar[str] = "api_token"
    needs: ClassVar[tuple[str, ...]] = ("base_url",)

    api_token: SecretStr | None = None
    base_url: BaseUrl | None = None
    not_found_retry_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> WeyaSettings:
        if self.enabled and not self.base_url:
            raise ValueError("WEYA_BASE_URL is required when WEYA_API_TOKEN is set")
        return self


class WeyaProvider:
    """The organisation's DNC list."""

    name = "weya"
    capabilities = Capabilities(
        max_batch=10,
        supports_remove=False,
        number_format=NumberFormat.DIGITS,
        needs_call_context=True,
        bulk=False,
        concurrency=2,
    )

    def __init__(
        self, token: str, base_url: str, not_found_window: float, client: httpx.Client
    ) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}
        self._url = base_url.rstrip("/") + PATH
        self._window = not_found_window
        self._client = client

    def targets(self) -> list[str]:
        return [self.name]

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        if action is Action.REMOVE:
            # The pipeline never stages a remove for an add-only target; refuse loudly if so.
            return {i.e164: NumberResult(Outcome.PERMANENT, "no_remove_endpoint") for i in items}
        return per_number(items, self._add, self.capabilities.concurrency)

    def _add(self, item: PushItem) -> NumberResult:
        batch_id = str(item.context.get("batchId") or "")
        request_uuid = str(item.context.get("requestUUID") or "")
        if not batch_id or not request_uuid:
            return NumberResult(Outcome.PERMANENT, "no_call_context")
        body: dict[str, str] = {
            "phoneNumber": str(render(item.e164, self.capabilities.number_format)),
            "batchId": batch_id,
            "requestUUID": request_uuid,
        }
        if item.context.get("type"):
            body["type"] = str(item.context["type"])
        response = send(
            self._client, "POST", self._url, auth_setting=AUTH_SETTING, headers=self._headers,
            json=body,
        )  # fmt: skip
        text = response.text[:300]
        if response.status_code == 404:
            raise RetryableError("call_record_not_found", text, retry_window=self._window)
        if response.status_code == 400:
            if "already exist" in text.lower():
                return NumberResult(Outcome.DONE, "already")
            raise PermanentError("http_400", text)
        if response.status_code >= 400:
            raise PermanentError(f"http_{response.status_code}", text)
        answer = json_body(response)
        if isinstance(answer, dict) and answer.get("status") is False:
            message = str(answer.get("errorMessage") or answer.get("message") or "")
            if "already exist" in message.lower():
                return NumberResult(Outcome.DONE, "already")
            raise PermanentError("refused", message)
        if not isinstance(answer, dict) or answer.get("status") is not True:
            # A 2xx without the documented {"status": true}: it confirms nothing.
            return NumberResult(
                Outcome.RETRY, "unconfirmed_answer", str(answer)[:200], may_land=True
            )
        return NumberResult(Outcome.DONE)

    def probe(self) -> None:
        # An empty body is refused with 400 (missing fields) when the token is good, 401
        # when it is not: nothing is added, nobody is emailed.
        send(self._client, "POST", self._url, auth_setting=AUTH_SETTING, headers=self._headers,
             json={})  # fmt: skip


def from_settings(settings: WeyaSettings, client: httpx.Client) -> WeyaProvider | None:
    """The adapter, or None when no API token is set."""
    if not settings.enabled or settings.api_token is None or not settings.base_url:
        return None
    return WeyaProvider(
        settings.api_token.get_secret_value(),
        settings.base_url,
        settings.not_found_retry_seconds,
        client,
    )
