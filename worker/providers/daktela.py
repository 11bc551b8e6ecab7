"""Daktela blacklist adapter (REST API v6): one record per number, native expiry.

The API (its documentation, "Daktela blacklist"): `X-AUTH-TOKEN` header; envelope
`{"error": [...] | {"primary": [...], "form": {...}}, "result": {...}}` and a 2xx can still
carry errors. A number is unique: a uniqueness error on create means an entry exists, which
is done only if it is in the wanted database with exactly the wanted expiry (a permanent
entry left over from an earlier block would outlive a temporary one: the block is lifted by
Daktela at its expiry, and nothing else is sent then); otherwise it is fetched and
corrected, moved into the wanted database if it was in another (answered as `moved`: the
pipeline then no longer trusts what that database's target was confirmed to hold). Remove =
look up the number in the target's database, delete that entry by its name (an entry in
another database is not ours to lift). A lookup that answers other numbers' entries (its
filter not applied), or not in the envelope (a proxy's page), says nothing of ours, a 404
without Daktela's error is no "already deleted", and a listing that repeats a page stops.
*Unconfirmed* by the vendor: the model path (`blacklistNumbers`) and the field names, so
both are settings (DAKTELA_MODEL, DAKTELA_FIELDS). Expiry is written in UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from config.types import BaseUrl, ProviderSettings, SafeId, pairs
from worker.domain.phones import NumberFormat, digits, render
from worker.providers.base import Action, Capabilities, NumberResult, Outcome, PushItem
from worker.providers.errors import PermanentError, RetryableError
from worker.providers.fanout import per_number
from worker.providers.http import request_json

API_PATH = "/api/v6"
AUTH_SETTING = "DAKTELA_ACCESS_TOKEN"
DEFAULT_FIELDS = {
    "number": "number",
    "description": "description",
    "database": "database",
    "expired": "expired",
}
_UNIQUE = ("unique", "already", "exist", "duplicate")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_expiry(expires_ms: int) -> str | None:
    if not expires_ms:
        return None
    return dt.datetime.fromtimestamp(expires_ms / 1000, tz=dt.UTC).strftime(_TIME_FORMAT)


def parse_expiry(value: Any) -> dt.datetime | None:
    if not value:
        return None
    text = str(value).replace("T", " ")[:19]
    try:
        return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _errors(body: Any) -> list[str]:
    """Every error message in a Daktela envelope, flattened."""
    if not isinstance(body, dict):
        return []
    error = body.get("error")
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and value:
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(error)
    return out


def _field(key: str, name: str) -> str:
    if key not in {"number", "description", "database", "expired"}:
        raise ValueError
    return name


class DaktelaSettings(ProviderSettings):
    """DAKTELA_*: the access token turns Daktela on; each instance has its own base URL."""

    model_config = SettingsConfigDict(env_prefix="DAKTELA_")
    credential: ClassVar[str] = "access_token"
    needs: ClassVar[tuple[str, ...]] = ("base_url",)

    access_token: SecretStr | None = None
    base_url: BaseUrl | None = None
    blacklist_database: SafeId = "Global"
    model: SafeId = "blacklistNumbers"
    #: Field names of the model, where an instance renamed them.
    fields: Annotated[
        dict[str, str],
        NoDecode,
        pairs("=", "number=..,description=..,database=..,expired=..", _field),
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> DaktelaSettings:
        if self.enabled and not self.base_url:
            raise ValueError(
                "DAKTELA_BASE_URL (https://<instance>.daktela.com) is required when "
                "DAKTELA_ACCESS_TOKEN is set"
            )
        return self


class DaktelaProvider:
    """One blacklist database per target: `daktela:<database>`."""

    name = "daktela"
    capabilities = Capabilities(
        max_batch=25,
        supports_remove=True,
        number_format=NumberFormat.PLUS,
        supports_expiry=True,
        bulk=False,
        concurrency=4,
        one_list=True,
    )

    def __init__(
        self,
        token: str,
        base_url: str,
        database: str,
        client: httpx.Client,
        model: str = "blacklistNumbers",
        fields: dict[str, str] | None = None,
    ) -> None:
        self._headers = {"X-AUTH-TOKEN": token}
        self._base = f"{base_url.rstrip('/')}{API_PATH}/{model}"
        self._database = database
        self._fields = {**DEFAULT_FIELDS, **(fields or {})}
        self._client = client

    def targets(self) -> list[str]:
        return [f"{self.name}:{self._database}"]

    def push(self, target: str, action: Action, items: list[PushItem]) -> dict[str, NumberResult]:
        # The target names its database: a worker whose settings name another database
        # still pushes this one where it belongs.
        database = target.split(":", 1)[1] if ":" in target else self._database
        call = self._add if action is Action.ADD else self._remove
        return per_number(items, lambda item: call(item, database), self.capabilities.concurrency)

    def _request(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        return request_json(
            self._client, method, url, auth_setting=AUTH_SETTING, headers=self._headers, **kwargs
        )

    def _record(self, item: PushItem, database: str) -> dict[str, Any]:
        f = self._fields
        description = f"opt-out via {item.source or 'optout-worker'}"
        if item.reason:
            description += f": {item.reason}"
        return {
            f["number"]: render(item.e164, self.capabilities.number_format),
            f["description"]: description[:250],
            f["database"]: database,
            f["expired"]: format_expiry(item.expires_ms),
        }

    def _add(self, item: PushItem, database: str) -> NumberResult:
        record = self._record(item, database)
        status, body = self._request("POST", f"{self._base}.json", json=record)
        errors = _errors(body)
        if status < 400 and not errors:
            return _done_if_confirmed(body)
        if any(word in e.lower() for e in errors for word in _UNIQUE):
            return self._correct(item, database)
        raise PermanentError(f"http_{status}" if status >= 400 else "refused",
                             "; ".join(errors)[:300])  # fmt: skip

    def _correct(self, item: PushItem, database: str) -> NumberResult:
        """The number exists: done if it is in the wanted database with the wanted expiry;
        otherwise move it there and give it the ledger's expiry. The ledger's expiry is the
        merge of every block (the longest wins there), so it is the one to hold: a longer
        one left from an earlier block (a permanent block since lifted by a remove) would
        outlive the ledger's, and Daktela lifting it at expiry is all that ever happens."""
        existing = self._find(item)
        if existing is None:
            raise RetryableError("unique_but_not_found", "create said it exists; lookup did not")
        f = self._fields
        have = parse_expiry(existing.get(f["expired"]))
        want = parse_expiry(format_expiry(item.expires_ms))
        elsewhere = _database_of(existing, f["database"])
        if elsewhere == database and have == want:
            return NumberResult(Outcome.DONE, "already")
        record = self._record(item, database)
        status, body = self._request(
            "PUT",
            f"{self._base}/{existing['name']}.json",
            json={f["database"]: record[f["database"]], f["expired"]: record[f["expired"]]},
        )
        errors = _errors(body)
        if status >= 400 or errors:
            raise PermanentError("correct_failed", "; ".join(errors)[:300] or f"HTTP {status}")
        result = _done_if_confirmed(body, "corrected")
        if result.outcome is Outcome.DONE and elsewhere != database:
            # Taken from another database: if that is a target of ours too (a rolling
            # change of DAKTELA_BLACKLIST_DATABASE), it no longer holds the number.
            return NumberResult(Outcome.DONE, "moved", f"from {self.name}:{elsewhere}")
        return result

    def _find(self, item: PushItem, database: str | None = None) -> dict[str, Any] | None:
        """The number's entry (numbers are unique), or only its entry in `database`."""
        f = self._fields
        number = str(render(item.e164, self.capabilities.number_format))
        params: dict[str, Any] = {
            "filter[0][field]": f["number"],
            "filter[0][operator]": "eq",
            "filter[0][value]": number,
            "take": 10,
        }
        if database is not None:
            params.update({"filter[1][field]": f["database"], "filter[1][operator]": "eq",
                           "filter[1][value]": database})  # fmt: skip
        status, body = self._request("GET", f"{self._base}.json", params=params)
        if status >= 400 or _errors(body):
            raise RetryableError(f"lookup_http_{status}", "; ".join(_errors(body))[:300])
        rows = _rows(body)
        if rows is None:
            # Not Daktela's answer (a proxy's `{}`, an empty 200): absent is not "not there".
            raise RetryableError("unconfirmed_lookup", str(body)[:200])
        if any(digits(str(e.get(f["number"], ""))) != digits(item.e164) for e in rows):
            # Rows for other numbers: the filter was not applied (a field name Daktela does
            # not know, say), so this answer says nothing about ours, present or not.
            raise RetryableError("lookup_unfiltered", f"{len(rows)} rows, not all this number")
        for entry in rows:
            if database is None or _database_of(entry, f["database"]) == database:
                return entry
        return None

    def _remove(self, item: PushItem, database: str) -> NumberResult:
        existing = self._find(item, database)
        if existing is None:
            # Not in this target's database (an entry elsewhere belongs to another list).
            return NumberResult(Outcome.DONE, "already")
        status, body = self._request("DELETE", f"{self._base}/{existing['name']}.json")
        if status == 404 and _is_envelope(body) and _errors(body):  # not a gateway's 404
            return NumberResult(Outcome.DONE, "already")
        if status == 404:
            return NumberResult(Outcome.RETRY, "unconfirmed_answer", str(body)[:200],
                                may_land=True)  # fmt: skip
        errors = _errors(body)
        if status >= 400 or errors:
            raise PermanentError(f"http_{status}", "; ".join(errors)[:300])
        return _done_if_confirmed(body)

    def probe(self) -> None:
        status, body = self._request("GET", f"{self._base}.json", params={"take": 1})
        if status >= 400 or _errors(body):
            raise PermanentError(f"http_{status}", "; ".join(_errors(body))[:300])

    def list_numbers(self, target: str) -> Iterator[str]:
        """Every number in the target database (for reconciliation), paged as it is read."""
        database = target.split(":", 1)[1] if ":" in target else self._database
        skip = 0
        previous: list[dict[str, Any]] | None = None
        while True:
            params = {
                "filter[0][field]": self._fields["database"],
                "filter[0][operator]": "eq",
                "filter[0][value]": database,
                "skip": skip,
                "take": 500,
            }
            status, body = self._request("GET", f"{self._base}.json", params=params)
            if status >= 400:
                raise RetryableError(f"http_{status}")
            rows = _rows(body)
            if rows is None:
                raise RetryableError("unconfirmed_listing", str(body)[:200])
            if rows and rows == previous:
                raise RetryableError("listing_not_paging", f"skip={skip} repeated a page")
            previous = rows
            now = dt.datetime.now(dt.UTC)
            for r in rows:
                expires = parse_expiry(r.get(self._fields["expired"]))
                if expires is None or expires > now:  # an expired entry no longer blocks
                    yield str(r.get(self._fields["number"], ""))
            if len(rows) < 500:
                return
            skip += 500


def _done_if_confirmed(body: Any, reason: str = "") -> NumberResult:
    """Done when the answer is the documented envelope with a result; any other 2xx (a
    proxy's page, another shape) confirms nothing."""
    result = body.get("result") if isinstance(body, dict) else None
    if isinstance(result, dict) or result is True:  # the record, or a delete's true
        return NumberResult(Outcome.DONE, reason)
    return NumberResult(Outcome.RETRY, "unconfirmed_answer", str(body)[:200], may_land=True)


def _is_envelope(body: Any) -> bool:
    """Daktela's own answer: `error` a list or an object, and a `result` beside it (a web
    framework's error page has a string `error` and no `result`)."""
    return (
        isinstance(body, dict) and isinstance(body.get("error"), list | dict) and "result" in body
    )


def _database_of(entry: dict[str, Any], field: str) -> Any:
    database = entry.get(field)
    return database.get("name") if isinstance(database, dict) else database


def _rows(body: Any) -> list[dict[str, Any]] | None:
    """The entries of a lookup or listing; None when the answer is not the documented
    envelope with a list of them (it then says nothing about which numbers are there)."""
    result = body.get("result") if isinstance(body, dict) else None
    data = result.get("data") if isinstance(result, dict) else result
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else None


def from_settings(settings: DaktelaSettings, client: httpx.Client) -> DaktelaProvider | None:
    """The adapter, or None when no access token is set."""
    if not settings.enabled or settings.access_token is None or not settings.base_url:
        return None
    return DaktelaProvider(
        settings.access_token.get_secret_value(),
        settings.base_url,
        settings.blacklist_database,
        client,
        model=settings.model,
        fields=settings.fields,
    )
