"""Building blocks of the settings: reading an environment, and the reusable field types."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

#: The environment `load_settings` was given (None: the process's own).
ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("optout_environ", default=None)


class _Environ(EnvSettingsSource):
    """The environment source, reading the mapping `load_settings` was given when there is one
    (tests, tools), else os.environ."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # A field named by `validation_alias` (REDIS_URL) is read under that name only, not
        # also as OPTOUT_REDIS_URL; a field the environment does not set (`providers`, read
        # from each provider's own model) is not read at all.
        if field_name in getattr(self.settings_cls, "not_from_environment", ()):
            return None, field_name, False
        alias = field.validation_alias
        if isinstance(alias, str):
            key = alias if self.case_sensitive else alias.lower()
            return self.env_vars.get(key), key, self.field_is_complex(field)
        return super().get_field_value(field, field_name)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = ENVIRON.get()
        return parse_env_vars(
            os.environ if environ is None else environ,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )


class EnvSettings(BaseSettings):
    """Settings read from environment variables only (no .env file, no secrets directory):
    keyword arguments first, then the environment; an empty variable counts as unset."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, env_ignore_empty=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environ(settings_cls)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Each field -> the environment variable it is read from."""
        prefix = str(cls.model_config.get("env_prefix") or "")
        return {
            name: str(field.validation_alias or prefix + name).upper()
            for name, field in cls.model_fields.items()
        }


class ProviderSettings(EnvSettings):
    """One provider's settings, declared in its module (env_prefix: its name in capitals);
    the provider is on when its credential is set."""

    #: The field holding the credential.
    credential: ClassVar[str]
    #: Fields the provider needs whenever its credential is set (its model checks them).
    needs: ClassVar[tuple[str, ...]] = ()

    @property
    def enabled(self) -> bool:
        return is_set(getattr(self, self.credential))

    @classmethod
    def credential_variables(cls) -> list[str]:
        """The variables a process must set to have this provider: its credential first."""
        names = cls.env_names()
        return [names[cls.credential], *(names[f] for f in cls.needs)]


def is_set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())


def split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _items(value: str, sep: str) -> Iterator[tuple[str, str, str | None]]:
    """Each comma-separated `key<sep>value` item as (item, key, value), stripped; the value
    is None when the item has no separator."""
    for item in split_csv(value):
        key, found, rest = item.partition(sep)
        yield item, key.strip(), rest.strip() if found else None


def pairs(
    sep: str,
    expected: str,
    value: Callable[[str, str], Any] = lambda _key, raw: raw,
    *,
    many: bool = False,
    echo: bool = True,
    finish: Callable[[Any], Any] = lambda parsed: parsed,
) -> BeforeValidator:
    """Parse `key<sep>value,key<sep>value` into a dict: `value(key, raw)` gives each value
    (raising ValueError to refuse it); with `many`, a key may repeat and collects a list;
    `finish` shapes the whole.
    A refusal names the item unless `echo` is off (secrets) and says what was `expected`
    (or the ValueError's own message)."""

    def parse(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        out: dict[str, Any] = {}
        for item, key, raw in _items(text, sep):
            try:
                if not key or not raw:
                    raise ValueError
                parsed = value(key, raw)
            except ValueError as exc:
                shown = f"{item!r}: " if echo else ""
                reason = str(exc) if exc.args and isinstance(exc.args[0], str) else ""
                raise ValueError(f"{shown}{reason or 'expected ' + expected}") from None
            if many:
                out.setdefault(key, []).append(parsed)
            else:
                out[key] = parsed
        return finish(out)

    return BeforeValidator(parse)


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _safe_ids(value: Any) -> Any:
    for item in value if isinstance(value, list) else [value]:
        if not _SAFE_ID.match(item):
            raise ValueError(f"{item!r}: use letters, digits, '.', '_' or '-'")
    return value


#: A comma-separated list.
Csv = Annotated[list[str], NoDecode, BeforeValidator(split_csv)]
#: An http(s) base URL, without a trailing slash.
BaseUrl = Annotated[str, AfterValidator(_http_url)]
#: Names that go into URLs and keys as they are: letters, digits, '.', '_', '-'.
SafeId = Annotated[str, AfterValidator(_safe_ids)]
SafeIds = Annotated[list[str], NoDecode, BeforeValidator(split_csv), AfterValidator(_safe_ids)]
