"""Phonely agent block list adapter: one list per agent, bulk add and remove.

The API (its documentation, "Phonely agent block list"): Header `X-Authorization`; POST and
DELETE take `{uid, agentId, numbers[]}` and answer `{added[] | removed[], failed[{number,
reason}]}`; "already in block list" / "not found in block list" mean the state already holds.
Numbers are E.164 with `+`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from config.types import BaseUrl, ProviderSettings, SafeIds
from worker.domain.phones import NumberFormat, digits, render
from worker.providers.base import Action, Capabilities, NumberResult, Outcome, PushItem
from worker.providers.errors import PermanentError, RetryableError
from worker.providers.http import json_body, send

PATH = "/api/agent-block-list"
AUTH_SETTING = "PHONELY_API_KEY"
_ALREADY = ("already in block list", "not found in block list")
_BAD_NUMBER = ("invalid", "format")


class PhonelySettings(ProviderSettings):
    """PHONELY_*: the API key turns Phonely on; the account's UID and agent ids come with it."""

    model_config = SettingsConfigDict(env_prefix="PHONELY_")
    credential: ClassVar[str] = "api_key"
    needs: ClassVar[tuple[str, ...]] = ("uid", "agent_ids")

    api_key: SecretStr | None = None
    uid: str | None = None
    agent_ids: SafeIds = Field(default_factory=list)
    base_url: BaseUrl = "https://app.phonely.ai"

    @model_validator(mode="after")
    def _complete(self) -> PhonelySettings:
        if self.enabled and not self.uid:
            raise ValueError("PHONELY_UID is required when PHONELY_API_KEY is set")
        if self.enabled and not self.agent_ids:
            raise ValueError("PHONELY_AGENT_IDS is required when PHONELY_API_KEY is set")
        return self


class PhonelyProvider:
    """Each configured agent's block list is its own target: `phonely:<agentId>`."""

    name = "phonely"
    capabilities = Capabilities(
        max_batch=100, supports_remove=True, number_format=NumberFormat.PLUS, concurrency=4
    )

    def __init__(
        self, api_key: str, uid: str, agent_ids: list[str], base_url: str, client: httpx.Client
    ) -> None:
        self._key = api_key
        self._uid = uid
        self._agents = agent_ids
        self._url = base_url.rstrip("/") + PATH
        self._client = client

    def targets(self) -> list[str]:
        return [f"{self.name}:{agent}" for agent in self._agents]

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        agent = target.split(":", 1)[1]
        numbers = [str(render(i.e164, self.capabilities.number_format)) for i in items]
        response = send(
            self._client,
            "POST" if action is Action.ADD else "DELETE",
            self._url,
            auth_setting=AUTH_SETTING,
            headers={"X-Authorization": self._key},
            json={"uid": self._uid, "agentId": agent, "numbers": numbers},
        )
        if response.status_code >= 400:
            raise PermanentError(f"http_{response.status_code}", response.text[:200])
        body = json_body(response)
        if not isinstance(body, dict):
            raise RetryableError("unreadable_answer", "answer is not a JSON object", outage=True)
        answered: dict[str, NumberResult] = {}
        for number in body.get("added" if action is Action.ADD else "removed") or []:
            answered[digits(str(number))] = NumberResult(Outcome.DONE)
        for failure in body.get("failed") or []:
            if not isinstance(failure, dict):
                continue
            reason = str(failure.get("reason", ""))
            answered[digits(str(failure.get("number", "")))] = _failure(reason)
        # Sent, and not reported on: it may be carried out yet.
        missing = NumberResult(
            Outcome.RETRY, "not_in_answer", "the answer did not mention it", may_land=True
        )
        return {i.e164: answered.get(digits(i.e164), missing) for i in items}

    def probe(self) -> None:
        for agent in self._agents:
            send(
                self._client,
                "GET",
                self._url,
                auth_setting=AUTH_SETTING,
                headers={"X-Authorization": self._key},
                params={"uid": self._uid, "agentId": agent},
            )

    def list_numbers(self, target: str) -> list[str]:
        """The agent's block list as sent back (for reconciliation)."""
        response = send(
            self._client,
            "GET",
            self._url,
            auth_setting=AUTH_SETTING,
            headers={"X-Authorization": self._key},
            params={"uid": self._uid, "agentId": target.split(":", 1)[1]},
        )
        body: Any = json_body(response)
        return [str(n) for n in (body.get("blockList") or [])] if isinstance(body, dict) else []


def _failure(reason: str) -> NumberResult:
    lowered = reason.lower()
    if any(phrase in lowered for phrase in _ALREADY):
        return NumberResult(Outcome.DONE, "already", reason)
    if any(word in lowered for word in _BAD_NUMBER):
        return NumberResult(Outcome.PERMANENT, "bad_format", reason)
    return NumberResult(Outcome.RETRY, "provider_failed", reason)


def from_settings(settings: PhonelySettings, client: httpx.Client) -> PhonelyProvider | None:
    """The adapter, or None when no API key is set."""
    if not settings.enabled or settings.api_key is None or not settings.uid:
        return None
    return PhonelyProvider(
        settings.api_key.get_secret_value(),
        settings.uid,
        settings.agent_ids,
        settings.base_url,
        client,
    )
