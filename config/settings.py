"""Typed settings: the only place that reads the process environment."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_VOICENTER_BASE_URL = "https://api.voicenter.com"
DEFAULT_PHONELY_BASE_URL = "https://app.phonely.ai"
DEFAULT_VOODOOSMS_BASE_URL = "https://api.voodoosms.com"
#: Which CDR field holds the customer for each Voicenter call type (shared/providers.md):
#: the target on outbound legs, the caller on inbound ones. Other types go to review.
DEFAULT_VOICENTER_CALL_TYPES = {
    "Extension Outgoing": ["target"],
    "Click2Call leg2": ["target"],
    "ProductiveCall Leg2": ["target"],
    "Click 2 IVR": ["target"],
    "Incoming Call": ["callerPhone", "caller"],
    "Queue": ["callerPhone", "caller"],
}
PROVIDERS = ("voicenter", "phonely", "voodoosms", "weya", "daktela")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the environment variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _pairs(value: str, sep: str) -> Iterator[tuple[str, str, str | None]]:
    """Each comma-separated `key<sep>value` item as (item, key, value), stripped; the value
    is None when the item has no separator."""
    for item in _split_csv(value):
        key, found, rest = item.partition(sep)
        yield item, key.strip(), rest.strip() if found else None


def routes_allow(routes: dict[str, dict[str, list[str]]], source: str, provider: str) -> bool:
    """Whether routes (OPTOUT_ROUTES' shape: source -> include/exclude lists) send an add
    from `source` to `provider`: a source without a rule goes everywhere (prelude.lua's
    target_state reads the announced routes the same way)."""
    rule = routes.get(source)
    if not rule:
        return True
    include = rule.get("include") or []
    return (not include or provider in include) and provider not in (rule.get("exclude") or [])


class Settings(BaseModel):
    """Everything optout-worker reads from the environment, validated once at start."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    celery_broker_url: str | None = Field(default=None, alias="CELERY_BROKER_URL")
    key_prefix: str = Field(default="optout:", alias="OPTOUT_KEY_PREFIX")
    queue_namespace: str = Field(default="", alias="OPTOUT_QUEUE_NAMESPACE")
    data_dir: Path = Field(default=Path("var"), alias="OPTOUT_DATA_DIR")
    default_region: str = Field(default="IL", alias="OPTOUT_DEFAULT_REGION")
    source_regions: dict[str, str] = Field(default_factory=dict, alias="OPTOUT_SOURCE_REGIONS")

    batch_size: int = Field(default=100, ge=1, le=100, alias="OPTOUT_BATCH_SIZE")
    batch_linger_ms: int = Field(default=1000, ge=0, le=600_000, alias="OPTOUT_BATCH_LINGER_MS")
    max_attempts: int = Field(default=8, ge=1, le=100, alias="OPTOUT_MAX_ATTEMPTS")
    retry_base_seconds: float = Field(default=2.0, gt=0, alias="OPTOUT_RETRY_BASE_SECONDS")
    retry_max_seconds: float = Field(default=600.0, gt=0, alias="OPTOUT_RETRY_MAX_SECONDS")
    lease_seconds: float = Field(default=120.0, gt=0, alias="OPTOUT_LEASE_SECONDS")
    outage_budget_hours: float = Field(default=24.0, gt=0, alias="OPTOUT_OUTAGE_BUDGET_HOURS")
    target_ttl_seconds: float = Field(default=600.0, ge=10, alias="OPTOUT_TARGET_TTL_SECONDS")
    sweep_interval_seconds: float = Field(default=1.0, gt=0, alias="OPTOUT_SWEEP_INTERVAL_SECONDS")
    recover_interval_seconds: float = Field(
        default=10.0, gt=0, alias="OPTOUT_RECOVER_INTERVAL_SECONDS"
    )
    http_timeout_seconds: float = Field(default=15.0, gt=0, alias="OPTOUT_HTTP_TIMEOUT_SECONDS")
    clock_skew_seconds: float = Field(default=300.0, ge=0, alias="OPTOUT_CLOCK_SKEW_SECONDS")
    idempotency_ttl_days: int = Field(default=30, ge=1, alias="OPTOUT_IDEMPOTENCY_TTL_DAYS")
    derived_key_ttl_hours: float = Field(
        default=1.0, gt=0, le=72, alias="OPTOUT_DERIVED_KEY_TTL_HOURS"
    )
    audit_cap: int = Field(default=50, ge=1, le=10_000, alias="OPTOUT_AUDIT_CAP")
    max_phones_per_request: int = Field(
        default=10_000, ge=1, le=100_000, alias="OPTOUT_MAX_PHONES_PER_REQUEST"
    )
    max_body_bytes: int = Field(default=2_000_000, ge=1024, alias="OPTOUT_MAX_BODY_BYTES")
    redis_wait_replicas: int = Field(default=0, ge=0, alias="OPTOUT_REDIS_WAIT_REPLICAS")
    redis_wait_timeout_ms: int = Field(
        default=1000, ge=1, le=60_000, alias="OPTOUT_REDIS_WAIT_TIMEOUT_MS"
    )
    worker_concurrency: int = Field(default=2, ge=1, le=64, alias="OPTOUT_WORKER_CONCURRENCY")
    per_number_concurrency: int = Field(
        default=2, ge=1, le=64, alias="OPTOUT_PER_NUMBER_CONCURRENCY"
    )
    reconcile_interval_hours: float = Field(
        default=24.0, ge=0, alias="OPTOUT_RECONCILE_INTERVAL_HOURS"
    )
    reconcile_remove_extras: bool = Field(default=False, alias="OPTOUT_RECONCILE_REMOVE_EXTRAS")
    log_format: str = Field(default="auto", alias="OPTOUT_LOG_FORMAT")
    sla_seconds: float = Field(default=86400.0, gt=0, alias="OPTOUT_SLA_SECONDS")

    webhook_tokens: dict[str, list[SecretStr]] = Field(
        default_factory=dict, alias="OPTOUT_WEBHOOK_TOKENS"
    )
    admin_token: SecretStr | None = Field(default=None, alias="OPTOUT_ADMIN_TOKEN")
    own_numbers: list[str] = Field(default_factory=list, alias="OPTOUT_OWN_NUMBERS")
    voicenter_optout_dtmf: str | None = Field(default=None, alias="OPTOUT_VOICENTER_OPTOUT_DTMF")
    voicenter_optout_layers: list[str] = Field(
        default_factory=list, alias="OPTOUT_VOICENTER_OPTOUT_LAYERS"
    )

    voicenter_optout_customdata: dict[str, str] = Field(
        default_factory=dict, alias="OPTOUT_VOICENTER_OPTOUT_CUSTOMDATA"
    )
    voicenter_call_types: dict[str, list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_VOICENTER_CALL_TYPES),
        alias="OPTOUT_VOICENTER_CALL_TYPES",
    )
    routes: dict[str, dict[str, list[str]]] = Field(default_factory=dict, alias="OPTOUT_ROUTES")
    provider_limits: dict[str, tuple[float, int]] = Field(
        default_factory=dict, alias="OPTOUT_PROVIDER_LIMITS"
    )

    voicenter_api_code: SecretStr | None = Field(default=None, alias="VOICENTER_API_CODE")
    voicenter_base_url: str = Field(default=DEFAULT_VOICENTER_BASE_URL, alias="VOICENTER_BASE_URL")

    phonely_api_key: SecretStr | None = Field(default=None, alias="PHONELY_API_KEY")
    phonely_uid: str | None = Field(default=None, alias="PHONELY_UID")
    phonely_agent_ids: list[str] = Field(default_factory=list, alias="PHONELY_AGENT_IDS")
    phonely_base_url: str = Field(default=DEFAULT_PHONELY_BASE_URL, alias="PHONELY_BASE_URL")

    voodoosms_api_key: SecretStr | None = Field(default=None, alias="VOODOOSMS_API_KEY")
    voodoosms_base_url: str = Field(default=DEFAULT_VOODOOSMS_BASE_URL, alias="VOODOOSMS_BASE_URL")

    weya_api_token: SecretStr | None = Field(default=None, alias="WEYA_API_TOKEN")
    weya_base_url: str | None = Field(default=None, alias="WEYA_BASE_URL")
    weya_not_found_retry_seconds: float = Field(
        default=600.0, gt=0, alias="WEYA_NOT_FOUND_RETRY_SECONDS"
    )

    daktela_access_token: SecretStr | None = Field(default=None, alias="DAKTELA_ACCESS_TOKEN")
    daktela_base_url: str | None = Field(default=None, alias="DAKTELA_BASE_URL")
    daktela_blacklist_database: str = Field(default="Global", alias="DAKTELA_BLACKLIST_DATABASE")
    daktela_model: str = Field(default="blacklistNumbers", alias="DAKTELA_MODEL")
    daktela_fields: dict[str, str] = Field(default_factory=dict, alias="DAKTELA_FIELDS")

    @field_validator("own_numbers", "voicenter_optout_layers", "phonely_agent_ids", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("source_regions", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, str] = {}
        for item, source, region in _pairs(value, ":"):
            if not source or not region:
                raise ValueError(f"expected source:REGION pairs, got {item!r}")
            out[source] = region.upper()
        return out

    @field_validator("webhook_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, list[str]] = {}
        for _, source, token in _pairs(value, ":"):
            if not source or not token:
                raise ValueError("expected source:token pairs separated by commas")
            out.setdefault(source, []).append(token)
        return out

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (e.g. IL, GB, US)")
        return region

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in {"auto", "json", "console"}:
            raise ValueError("must be auto, json or console")
        return value

    @field_validator(
        "voicenter_base_url", "phonely_base_url", "voodoosms_base_url", "weya_base_url",
        "daktela_base_url",
    )  # fmt: skip
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("phonely_agent_ids", "daktela_blacklist_database", "daktela_model")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if not _SAFE_ID.match(item):
                raise ValueError(f"{item!r}: use letters, digits, '.', '_' or '-'")
        return value

    @field_validator("daktela_fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out = {}
        for _, key, name in _pairs(value, "="):
            if name is None or key not in {"number", "description", "database", "expired"}:
                raise ValueError("expected number=..,description=..,database=..,expired=..")
            out[key] = name
        return out

    @field_validator("voicenter_optout_customdata", mode="before")
    @classmethod
    def _customdata(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out = {}
        for _, key, wanted in _pairs(value, "="):
            if wanted is None or not key:
                raise ValueError("expected key=value pairs, e.g. var_optout=1")
            out[key] = wanted
        return out

    @field_validator("voicenter_call_types", mode="before")
    @classmethod
    def _call_types(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, list[str]] = {}
        for _, call_type, fields in _pairs(value, "="):
            names = [f.strip() for f in (fields or "").split("|") if f.strip()]
            if not call_type or not names:
                raise ValueError(
                    "expected type=field|field pairs, e.g. Queue=callerPhone|caller,"
                    "Extension Outgoing=target"
                )
            out[call_type] = names
        return out

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, dict[str, list[str]]] = {}
        for item, source, provider in _pairs(value, "="):
            name = (provider or "").lstrip("-")
            if name not in PROVIDERS:
                raise ValueError(
                    f"{item!r}: expected source=provider or source=-provider "
                    f"(providers: {', '.join(PROVIDERS)})"
                )
            kind = "exclude" if (provider or "").startswith("-") else "include"
            out.setdefault(source, {"include": [], "exclude": []})[kind].append(name)
        return out

    @field_validator("provider_limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, tuple[float, int]] = {}
        for item, name, spec in _pairs(value, "="):
            rps, slash, cap = (spec or "").partition("/")
            try:
                if not slash or name not in PROVIDERS:
                    raise ValueError
                out[name] = (float(rps), int(cap))
            except ValueError:
                raise ValueError(
                    f"{item!r}: expected provider=RPS/CONCURRENCY, e.g. voicenter=10/4"
                ) from None
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("OPTOUT_RETRY_MAX_SECONDS must be at least OPTOUT_RETRY_BASE_SECONDS")
        if self.lease_seconds < 2 * self.http_timeout_seconds:
            # A push renews its lease before each request; a request that could outlive it
            # would let a recovered chunk's push land after a newer one.
            raise ValueError(
                "OPTOUT_LEASE_SECONDS must be at least twice OPTOUT_HTTP_TIMEOUT_SECONDS"
            )
        if _set(self.phonely_api_key):
            if not self.phonely_uid:
                raise ValueError("PHONELY_UID is required when PHONELY_API_KEY is set")
            if not self.phonely_agent_ids:
                raise ValueError("PHONELY_AGENT_IDS is required when PHONELY_API_KEY is set")
        if _set(self.weya_api_token) and not self.weya_base_url:
            raise ValueError("WEYA_BASE_URL is required when WEYA_API_TOKEN is set")
        if _set(self.daktela_access_token) and not self.daktela_base_url:
            raise ValueError(
                "DAKTELA_BASE_URL (https://<instance>.daktela.com) is required when "
                "DAKTELA_ACCESS_TOKEN is set"
            )
        return self

    @property
    def broker_url(self) -> str:
        if self.celery_broker_url:
            return self.celery_broker_url
        return kombu_url(self.state_redis_url)

    @property
    def state_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("REDIS_URL is not set (optout up starts an embedded Redis for you)")
        return self.redis_url

    def region_for(self, source: str) -> str:
        return self.source_regions.get(source, self.default_region)

    def enabled_providers(self) -> list[str]:
        """Provider names whose credentials are set, in a stable order."""
        credentials = {
            "voicenter": self.voicenter_api_code,
            "phonely": self.phonely_api_key,
            "voodoosms": self.voodoosms_api_key,
            "weya": self.weya_api_token,
            "daktela": self.daktela_access_token,
        }
        return [name for name in PROVIDERS if _set(credentials[name])]

    def routed(self, source: str, providers: list[str]) -> list[str]:
        """The providers an event from `source` goes to: all by default, narrowed by
        OPTOUT_ROUTES includes, minus its excludes."""
        return [p for p in providers if routes_allow(self.routes, source, p)]

    def limits_for(self, provider: str) -> tuple[float, int]:
        """(requests per second, concurrent requests) shared by every worker; 0 = no limit."""
        return self.provider_limits.get(provider, (20.0, 8))


def kombu_url(url: str) -> str:
    """redis-py says unix://, kombu says redis+socket:// for the same socket."""
    if url.startswith("unix://"):
        return "redis+socket://" + url.removeprefix("unix://")
    return url


def _set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())


def _field_to_env() -> dict[str, str]:
    return {name: (field.alias or name.upper()) for name, field in Settings.model_fields.items()}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings once; a bad value raises ConfigError naming its variable."""
    env = dict(os.environ if environ is None else environ)
    known = {alias.upper() for alias in _field_to_env().values()}
    values: dict[str, Any] = {
        k.upper(): v for k, v in env.items() if k.upper() in known and v != ""
    }
    names = _field_to_env()
    values.update({names.get(k, k): v for k, v in overrides.items()})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error.get("loc") or ()
            field = str(loc[0]) if loc else ""
            var = names.get(field, field) or "settings"
            problems.append(f"{var}: {error.get('msg', 'invalid')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
