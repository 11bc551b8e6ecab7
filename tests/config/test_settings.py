"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings
from config.settings import variables
from worker.providers import PROVIDERS, SETTINGS


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


def test_lists_and_pairs_are_read_as_text_not_json() -> None:
    settings = load_settings(
        {
            "OPTOUT_OWN_NUMBERS": "0501234567, 0521234567",
            "OPTOUT_ROUTES": "sms=voodoosms,crm=-weya,crm=-phonely",
            "OPTOUT_PROVIDER_LIMITS": "voicenter=10/4",
            "OPTOUT_VOICENTER_CALL_TYPES": "Queue=callerPhone|caller,Extension Outgoing=target",
            "OPTOUT_VOICENTER_OPTOUT_CUSTOMDATA": "var_optout=1",
        }
    )
    assert settings.own_numbers == ["0501234567", "0521234567"]
    assert settings.routes == {
        "sms": {"include": ["voodoosms"], "exclude": []},
        "crm": {"include": [], "exclude": ["weya", "phonely"]},
    }
    assert settings.limits_for("voicenter") == (10.0, 4)
    assert settings.voicenter_call_types == {
        "Queue": ["callerPhone", "caller"],
        "Extension Outgoing": ["target"],
    }
    assert settings.voicenter_optout_customdata == {"var_optout": "1"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPTOUT_ROUTES": "sms=twilio"}, "OPTOUT_ROUTES: Value error, 'sms=twilio': expected "
         "source=provider or source=-provider (providers: voicenter, phonely"),
        ({"OPTOUT_PROVIDER_LIMITS": "voicenter=10"}, "OPTOUT_PROVIDER_LIMITS: Value error, "
         "'voicenter=10': expected provider=RPS/CONCURRENCY"),
        ({"OPTOUT_PROVIDER_LIMITS": "voicenter=x/4"}, "'voicenter=x/4': expected provider="),
        ({"OPTOUT_VOICENTER_CALL_TYPES": "Queue=|"}, "OPTOUT_VOICENTER_CALL_TYPES"),
        ({"DAKTELA_FIELDS": "colour=red"}, "DAKTELA_FIELDS: Value error, 'colour=red'"),
        ({"DAKTELA_MODEL": "a/b"}, "DAKTELA_MODEL"),
        ({"PHONELY_AGENT_IDS": "a b"}, "PHONELY_AGENT_IDS"),
        ({"WEYA_BASE_URL": "weya.example"}, "WEYA_BASE_URL: Value error, must start with http"),
        ({"WEYA_API_TOKEN": "t"}, "WEYA_BASE_URL is required when WEYA_API_TOKEN is set"),
        ({"PHONELY_API_KEY": "k", "PHONELY_AGENT_IDS": "a"}, "PHONELY_UID is required"),
        ({"WEYA_NOT_FOUND_RETRY_SECONDS": "0"}, "WEYA_NOT_FOUND_RETRY_SECONDS"),
        # An empty wanted value would make every CDR without the field an opt-out.
        ({"OPTOUT_VOICENTER_OPTOUT_CUSTOMDATA": "var_optout="}, "'var_optout=': expected"),
        ({"OPTOUT_ROUTES": "=voicenter"}, "'=voicenter': expected"),
    ],
)  # fmt: skip
def test_a_bad_list_or_pair_fails_naming_its_variable_and_item(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    assert named in str(raised.value)


def test_a_refused_token_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match="OPTOUT_WEBHOOK_TOKENS") as raised:
        load_settings({"OPTOUT_WEBHOOK_TOKENS": "dnc:ok,s3cret-without-source"})
    assert "s3cret" not in str(raised.value)


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"OPTOUT_BATCH_SIZE": "0", "DAKTELA_MODEL": "a/b", "VOICENTER_BASE_URL": "x"})
    for name in ("OPTOUT_BATCH_SIZE", "DAKTELA_MODEL", "VOICENTER_BASE_URL"):
        assert name in str(raised.value)


def test_each_provider_reads_its_own_settings_model() -> None:
    from worker.providers.daktela import DaktelaSettings

    settings = load_settings(
        {
            "DAKTELA_ACCESS_TOKEN": "tok3n",
            "DAKTELA_BASE_URL": "https://acme.daktela.com/",
            "DAKTELA_FIELDS": "database=db",
        },
        daktela_blacklist_database="Sales",
    )
    daktela = settings.providers["daktela"]
    assert isinstance(daktela, DaktelaSettings)
    assert daktela.base_url == "https://acme.daktela.com"
    assert daktela.blacklist_database == "Sales"
    assert daktela.fields == {"database": "db"}
    assert settings.enabled_providers() == ["daktela"]
    assert "tok3n" not in repr(settings)


def test_the_given_environment_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICENTER_API_CODE", "from-the-process")
    monkeypatch.setenv("OPTOUT_BATCH_SIZE", "7")
    assert load_settings({}).enabled_providers() == []
    assert load_settings({}).batch_size == 100
    assert load_settings().enabled_providers() == ["voicenter"]
    assert load_settings().batch_size == 7


def test_variables_name_every_setting_once() -> None:
    names = variables()
    assert {"REDIS_URL", "CELERY_BROKER_URL", "OPTOUT_BATCH_SIZE", "OPTOUT_ROUTES"} <= names
    assert {"VOICENTER_API_CODE", "DAKTELA_FIELDS", "WEYA_NOT_FOUND_RETRY_SECONDS"} <= names
    shown = dict(load_settings({"PHONELY_UID": "u"}).variables())
    assert shown["PHONELY_UID"] == "u"
    assert shown["OPTOUT_BATCH_SIZE"] == 100


@pytest.mark.parametrize(
    ("variable", "field"),
    [("OPTOUT_REDIS_URL", "redis_url"), ("OPTOUT_CELERY_BROKER_URL", "celery_broker_url")],
)
def test_a_url_is_read_under_its_own_name_only(variable: str, field: str) -> None:
    # With REDIS_URL unset, a stray OPTOUT_REDIS_URL must not choose where the ledger lives.
    settings = load_settings({variable: "redis://elsewhere.invalid:6379/0"})
    assert getattr(settings, field) is None
    assert load_settings({"REDIS_URL": "redis://h:1/0"}).redis_url == "redis://h:1/0"


def test_no_variable_sets_the_providers_field() -> None:
    settings = load_settings({"OPTOUT_PROVIDERS": "voicenter", "VOICENTER_API_CODE": "abc"})
    assert settings.enabled_providers() == ["voicenter"]


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_providers_credential_variables_are_exactly_what_turns_it_on(name: str) -> None:
    # What `optout provider test` tells an operator to set must be enough, and each needed.
    variables = SETTINGS[name].credential_variables()
    value = {v: "https://p.example" if v.endswith("_BASE_URL") else "x" for v in variables}
    assert load_settings(value).enabled_providers() == [name]
    for left_out in variables[1:]:
        with pytest.raises(ConfigError, match=left_out):
            load_settings({k: v for k, v in value.items() if k != left_out})


def test_sentinels_are_read_as_host_port_pairs() -> None:
    settings = load_settings({"OPTOUT_REDIS_SENTINELS": "redis-a:26379, [::1]:26380,",
                              "OPTOUT_REDIS_SENTINEL_MASTER": "optout"})  # fmt: skip
    assert settings.sentinel_addresses == [("redis-a", 26379), ("::1", 26380)]
    assert settings.redis_configured and settings.redis_url is None
    assert settings.broker_url == "sentinel://redis-a:26379/0;sentinel://[::1]:26380/0"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OPTOUT_REDIS_SENTINELS": "redis-a"}, "'redis-a': expected host:port"),
        ({"OPTOUT_REDIS_SENTINELS": "redis-a:0"}, "'redis-a:0': expected host:port"),
        ({"OPTOUT_REDIS_SENTINELS": "a:1"}, "needs OPTOUT_REDIS_SENTINEL_MASTER"),
        ({"OPTOUT_REDIS_SENTINELS": "a:1", "OPTOUT_REDIS_SENTINEL_MASTER": "m",
          "REDIS_URL": "redis://h:6379/0"}, "set REDIS_URL or OPTOUT_REDIS_SENTINELS, not both"),
    ],
)  # fmt: skip
def test_a_bad_sentinel_setting_says_what_is_wrong(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(env)


def test_redis_passwords_are_secrets() -> None:
    settings = load_settings({"REDIS_URL": "redis://h:6379/0", "OPTOUT_REDIS_PASSWORD": "pw",
                              "OPTOUT_REDIS_SENTINEL_PASSWORD": "spw"})  # fmt: skip
    assert "pw" not in repr(settings)
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "pw"
