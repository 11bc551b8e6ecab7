"""Typed settings: the only place that reads the process environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import quote

from pydantic import (
    Field,
    InstanceOf,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode, SettingsConfigDict

from config.types import ENVIRON, Csv, EnvSettings, ProviderSettings, pairs
from worker.domain.errors import OptoutError

#: Which CDR field holds the customer for each Voicenter call type :
#: the target on outbound legs, the caller on inbound ones. Other types go to review.
DEFAULT_VOICENTER_CALL_TYPES = {
    "Extension Outgoing": ["target"],
    "Click2Call leg2": ["target"],
    "ProductiveCall Leg2": ["target"],
    "Click 2 IVR": ["target"],
    "Incoming Call": ["callerPhone", "caller"],
    "Queue": ["callerPhone", "caller"],
}


_S = TypeVar("_S", bound=EnvSettings)


class ConfigError(OptoutError, reason="bad_config"):
    """A setting is missing or malformed; the message names the environment variable."""


def routes_allow(routes: dict[str, dict[str, list[str]]], source: str, provider: str) -> bool:
    """Whether routes (OPTOUT_ROUTES' shape: source -> include/exclude lists) send an add
    from `source` to `provider`: a source without a rule goes everywhere (prelude.lua's
    target_state reads the announced routes the same way)."""
    rule = routes.get(source)
    if not rule:
        return True
    include = rule.get("include") or []
    return (not include or provider in include) and provider not in (rule.get("exclude") or [])


def _upper(_: str, raw: str) -> str:
    return raw.upper()


def _providers() -> dict[str, type[ProviderSettings]]:
    """Each provider's settings model, declared in its module (imported here, when settings
    are read, because a provider module imports config.types)."""
    from worker.providers import SETTINGS

    return SETTINGS


def _route(_: str, raw: str) -> tuple[str, str]:
    name = raw.lstrip("-")
    if name not in _providers():
        raise ValueError(
            f"expected source=provider or source=-provider (providers: {', '.join(_providers())})"
        )
    return ("exclude" if raw.startswith("-") else "include", name)


def _limit(name: str, raw: str) -> tuple[float, int]:
    rps, slash, cap = raw.partition("/")
    try:
        if slash and name in _providers():
            return float(rps), int(cap)
    except ValueError:
        pass
    raise ValueError


def _rules(routes: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for source, picks in routes.items():
        rule = out.setdefault(source, {"include": [], "exclude": []})
        for kind, name in picks:
            rule[kind].append(name)
    return out


def _call_type_fields(_: str, raw: str) -> list[str]:
    names = [f.strip() for f in raw.split("|") if f.strip()]
    if not names:
        raise ValueError
    return names


class Settings(EnvSettings):
    """Everything optout-worker reads from the environment (OPTOUT_*, REDIS_URL,
    CELERY_BROKER_URL; each provider's own in `providers`), validated once at start."""

    model_config = SettingsConfigDict(env_prefix="OPTOUT_")
    #: Fields no variable sets: each provider's settings are read by its own model.
    not_from_environment: ClassVar[frozenset[str]] = frozenset({"providers"})

    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    celery_broker_url: str | None = Field(default=None, validation_alias="CELERY_BROKER_URL")
    key_prefix: str = "optout:"
    queue_namespace: str = ""
    data_dir: Path = Field(default=Path("var"))
    default_region: str = "IL"
    source_regions: Annotated[
        dict[str, str], NoDecode, pairs(":", "source:REGION pairs", _upper)
    ] = Field(default_factory=dict)

    batch_size: int = Field(default=100, ge=1, le=100)
    batch_linger_ms: int = Field(default=1000, ge=0, le=600_000)
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)
    lease_seconds: float = Field(default=120.0, gt=0)
    outage_budget_hours: float = Field(default=24.0, gt=0)
    target_ttl_seconds: float = Field(default=600.0, ge=10)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    recover_interval_seconds: float = Field(default=10.0, gt=0)
    http_timeout_seconds: float = Field(default=15.0, gt=0)
    clock_skew_seconds: float = Field(default=300.0, ge=0)
    idempotency_ttl_days: int = Field(default=30, ge=1)
    derived_key_ttl_hours: float = Field(default=1.0, gt=0, le=72)
    audit_cap: int = Field(default=50, ge=1, le=10_000)
    max_phones_per_request: int = Field(default=10_000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    #: Redis behind Sentinel (instead of REDIS_URL): the Sentinels as host:port,host:port,
    #: the master's name, and the passwords of the Sentinels and of the Redis nodes.
    redis_sentinels: Csv = Field(default_factory=list)
    redis_sentinel_master: str | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_password: SecretStr | None = None
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    per_number_concurrency: int = Field(default=2, ge=1, le=64)
    reconcile_interval_hours: float = Field(default=24.0, ge=0)
    reconcile_remove_extras: bool = False
    log_format: str = "auto"
    sla_seconds: float = Field(default=86400.0, gt=0)
    #: The audit archive: postgresql://user:password@host/db, or sqlite:///path (default:
    #: SQLite in DATA_DIR/archive.sqlite3).
    archive_url: str | None = None
    archive_batch: int = Field(default=5000, ge=1, le=100_000)
    archive_interval_seconds: float = Field(default=1.0, gt=0)
    #: While pushes are in flight a drain waits, up to this long (its oldest entry's age):
    #: the opt-outs reach the providers first. 0: never waits.
    archive_defer_seconds: float = Field(default=30.0, ge=0)
    audit_retention_days: int = Field(default=1826, ge=1)
    #: Entries waiting for the archive above which it is an alarm (logged, /readyz)...
    audit_backlog_alarm: int = Field(default=1_000_000, ge=1)
    #: ... and above which accepts are refused with 503 until it drains (never dropped).
    audit_backlog_limit: int = Field(default=10_000_000, ge=1)

    webhook_tokens: Annotated[
        dict[str, list[SecretStr]],
        NoDecode,
        pairs(":", "source:token pairs separated by commas", many=True, echo=False),
    ] = Field(default_factory=dict)
    admin_token: SecretStr | None = None
    own_numbers: Csv = Field(default_factory=list)
    voicenter_optout_dtmf: str | None = None
    voicenter_optout_layers: Csv = Field(default_factory=list)
    voicenter_optout_customdata: Annotated[
        dict[str, str], NoDecode, pairs("=", "key=value pairs, e.g. var_optout=1")
    ] = Field(default_factory=dict)
    voicenter_call_types: Annotated[
        dict[str, list[str]],
        NoDecode,
        pairs(
            "=",
            "type=field|field pairs, e.g. Queue=callerPhone|caller,Extension Outgoing=target",
            _call_type_fields,
        ),
    ] = Field(default_factory=lambda: dict(DEFAULT_VOICENTER_CALL_TYPES))
    routes: Annotated[
        dict[str, dict[str, list[str]]],
        NoDecode,
        pairs(
            "=",
            "source=provider or source=-provider",
            _route,
            many=True,
            finish=_rules,
        ),
    ] = Field(default_factory=dict)
    provider_limits: Annotated[
        dict[str, tuple[float, int]],
        NoDecode,
        pairs("=", "provider=RPS/CONCURRENCY, e.g. voicenter=10/4", _limit),
    ] = Field(default_factory=dict)

    #: Each provider's settings (its module declares them), enabled or not.
    providers: dict[str, InstanceOf[ProviderSettings]] = Field(default_factory=dict)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (e.g. IL, GB, US)")
        return region

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item!r}: expected host:port,host:port (e.g. redis-a:26379)")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in {"auto", "json", "console"}:
            raise ValueError("must be auto, json or console")
        return value

    @field_validator("archive_url")
    @classmethod
    def _archive_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = value.partition("://")[0].lower()
        if scheme not in {"postgresql", "postgres", "postgresql+psycopg", "sqlite"}:
            raise ValueError("must be postgresql://user:password@host/db or sqlite:///path")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.redis_sentinels and self.redis_url:
            raise ValueError(
                "set REDIS_URL or OPTOUT_REDIS_SENTINELS, not both (with Sentinel, the primary "
                "is whichever Redis the Sentinels name)"
            )
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("OPTOUT_REDIS_SENTINELS needs OPTOUT_REDIS_SENTINEL_MASTER")
        if self.audit_backlog_limit < self.audit_backlog_alarm:
            raise ValueError(
                "OPTOUT_AUDIT_BACKLOG_LIMIT must be at least OPTOUT_AUDIT_BACKLOG_ALARM"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("OPTOUT_RETRY_MAX_SECONDS must be at least OPTOUT_RETRY_BASE_SECONDS")
        if self.lease_seconds < 2 * self.http_timeout_seconds:
            # A push renews its lease before each request; a request that could outlive it
            # would let a recovered chunk's push land after a newer one.
            raise ValueError(
                "OPTOUT_LEASE_SECONDS must be at least twice OPTOUT_HTTP_TIMEOUT_SECONDS"
            )
        return self

    @property
    def redis_configured(self) -> bool:
        """A Redis to use was named: REDIS_URL, or Sentinels."""
        return bool(self.redis_url or self.redis_sentinels)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as (host, port); empty without Sentinel."""
        return [(h.strip("[]"), int(p)) for h, _, p in (s.rpartition(":") for s in
                                                       self.redis_sentinels)]  # fmt: skip

    @property
    def broker_url(self) -> str:
        if self.celery_broker_url:
            return self.celery_broker_url
        if self.redis_sentinels:
            return sentinel_broker_url(self.sentinel_addresses, self.redis_password)
        return kombu_url(self.state_redis_url)

    @property
    def state_redis_url(self) -> str:
        if not self.redis_url:
            from worker.runtime.embedded import redis_url_missing

            raise ConfigError(redis_url_missing(self))
        return self.redis_url

    @property
    def archive_database_url(self) -> str:
        """OPTOUT_ARCHIVE_URL, or the embedded default: SQLite in the data dir."""
        if self.archive_url:
            return self.archive_url
        return f"sqlite:///{(self.data_dir / 'archive.sqlite3').resolve()}"

    def region_for(self, source: str) -> str:
        return self.source_regions.get(source, self.default_region)

    def enabled_providers(self) -> list[str]:
        """Provider names whose credentials are set, in a stable order."""
        return [name for name, provider in self.providers.items() if provider.enabled]

    def routed(self, source: str, providers: list[str]) -> list[str]:
        """The providers an event from `source` goes to: all by default, narrowed by
        OPTOUT_ROUTES includes, minus its excludes."""
        return [p for p in providers if routes_allow(self.routes, source, p)]

    def limits_for(self, provider: str) -> tuple[float, int]:
        """(requests per second, concurrent requests) shared by every worker; 0 = no limit."""
        return self.provider_limits.get(provider, (20.0, 8))

    @property
    def slot_lease_seconds(self) -> float:
        """How long a provider request's slot is held at most: a request's whole exchange
        with time to spare, so that a worker killed mid-request leaks its slot only so long."""
        return self.http_timeout_seconds * 2 + 5

    def variables(self) -> list[tuple[str, Any]]:
        """Every setting as (environment variable, value), each provider's after the rest."""
        out = [(env, getattr(self, name)) for name, env in self.env_names().items()
               if name != "providers"]  # fmt: skip
        for provider in self.providers.values():
            out += [(env, getattr(provider, name)) for name, env in provider.env_names().items()]
        return out


def sentinel_broker_url(sentinels: list[tuple[str, int]], password: SecretStr | None) -> str:
    """kombu's Sentinel broker URL: `sentinel://:password@host:port/0` for each Sentinel,
    joined by ';' with none trailing (a trailing ';' makes kombu add localhost). The password
    is the Redis nodes' (kombu uses the first URL's); the Sentinels' own goes in the
    transport options."""
    auth = ""
    if password is not None and password.get_secret_value():
        auth = ":" + quote(password.get_secret_value(), safe="") + "@"
    return ";".join(f"sentinel://{auth}{_host(h)}:{p}/0" for h, p in sentinels)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def kombu_url(url: str) -> str:
    """redis-py says unix://, kombu says redis+socket:// for the same socket."""
    if url.startswith("unix://"):
        return "redis+socket://" + url.removeprefix("unix://")
    return url


def variables() -> set[str]:
    """Every environment variable the settings read."""
    names = {env for name, env in Settings.env_names().items() if name != "providers"}
    for cls in _providers().values():
        names |= set(cls.env_names().values())
    return names


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings once, from `environ` (default: the process's); bad
    values raise one ConfigError naming each variable. `overrides` take field names; a
    provider's are `<provider>_<field>` (e.g. daktela_model)."""
    core = {k: v for k, v in overrides.items() if k in Settings.model_fields}
    problems: list[str] = []
    token = ENVIRON.set(environ)
    try:
        providers: dict[str, ProviderSettings] = {}
        for name, cls in _providers().items():
            own = {k.removeprefix(f"{name}_"): v for k, v in overrides.items()
                   if k not in core and k.startswith(f"{name}_")}  # fmt: skip
            if (read := _validated(cls, own, problems)) is not None:
                providers[name] = read
        settings = _validated(Settings, {**core, "providers": providers}, problems)
    finally:
        ENVIRON.reset(token)
    if settings is None or problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return settings


def _validated(cls: type[_S], values: dict[str, Any], problems: list[str]) -> _S | None:
    """`cls` read from the environment and `values`; None, with the problems named by their
    variables, when it does not validate."""
    names = cls.env_names()
    try:
        return cls(**values)
    except ValidationError as exc:
        for error in exc.errors():
            loc = error.get("loc") or ()
            field = str(loc[0]) if loc else ""
            var = names.get(field, field) or "settings"
            problems.append(f"{var}: {error.get('msg', 'invalid')}")
        return None
