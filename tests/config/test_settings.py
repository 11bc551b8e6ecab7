"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings


def test_defaults_leave_every_provider_off() -> None:
    settings = load_settings({})
    assert settings.batch_size == 100
    assert settings.default_region == "IL"
    assert settings.enabled_providers() == []


def test_voicenter_is_on_when_its_code_is_set() -> None:
    settings = load_settings({"VOICENTER_API_CODE": "abc"})
    assert settings.enabled_providers() == ["voicenter"]
    assert "abc" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPTOUT_BATCH_SIZE": "101"}, "OPTOUT_BATCH_SIZE"),
        ({"OPTOUT_BATCH_SIZE": "lots"}, "OPTOUT_BATCH_SIZE"),
        ({"OPTOUT_DEFAULT_REGION": "XX"}, "OPTOUT_DEFAULT_REGION"),
        ({"VOICENTER_BASE_URL": "ftp://x"}, "VOICENTER_BASE_URL"),
        ({"OPTOUT_WEBHOOK_TOKENS": "nocolon"}, "OPTOUT_WEBHOOK_TOKENS"),
        ({"OPTOUT_SOURCE_REGIONS": "crm"}, "OPTOUT_SOURCE_REGIONS"),
    ],
)
def test_a_bad_value_fails_naming_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_webhook_tokens_allow_two_per_source_for_rotation() -> None:
    settings = load_settings({"OPTOUT_WEBHOOK_TOKENS": "voicenter:old,voicenter:new,dnc:t"})
    tokens = {k: [t.get_secret_value() for t in v] for k, v in settings.webhook_tokens.items()}
    assert tokens == {"voicenter": ["old", "new"], "dnc": ["t"]}


def test_source_region_override() -> None:
    settings = load_settings({"OPTOUT_SOURCE_REGIONS": "uk-sms:gb"})
    assert settings.region_for("uk-sms") == "GB"
    assert settings.region_for("api") == "IL"


def test_state_url_missing_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        _ = load_settings({}).state_redis_url


def test_broker_defaults_to_the_state_redis() -> None:
    settings = load_settings({"REDIS_URL": "redis://h:1/2"})
    assert settings.broker_url == "redis://h:1/2"
    rabbit = load_settings({"REDIS_URL": "redis://h:1/2", "CELERY_BROKER_URL": "amqp://r//"})
    assert rabbit.broker_url == "amqp://r//"
