"""Celery configuration: at-least-once settings and one isolated queue per provider."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from config import ConfigError, Settings
from tests.conftest import make_settings
from tests.fakes.providers import env_for
from worker.runtime.broker import (
    SENTINEL_TRANSPORT,
    TRANSPORT,
    Channel,
    SentinelChannel,
    SentinelTransport,
    Transport,
    sentinel_options,
    transport_for,
)
from worker.runtime.celery_app import (
    BACKGROUND_QUEUE,
    DEFAULT_QUEUE,
    MAIN,
    PER_NUMBER,
    create_celery,
    push_queue,
    queue_names,
    worker_groups,
)


def test_reliability_settings() -> None:
    conf = create_celery(make_settings()).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]


def test_each_provider_queue_has_its_own_routing_key() -> None:
    app = create_celery(make_settings())
    names = queue_names(make_settings())
    assert names == [DEFAULT_QUEUE, push_queue("voicenter"), BACKGROUND_QUEUE]
    keys = {app.amqp.queues[name].routing_key for name in names}
    assert keys == set(names)


def test_broker_keys_share_the_state_prefix_on_redis() -> None:
    app = create_celery(make_settings(key_prefix="t1:"))
    assert app.conf.broker_transport_options["global_keyprefix"] == "t1:broker:"
    # kombu's own interval (25 s) for its BRPOP checks: a shorter one makes its drop of a
    # connection whose reply is late (a server stalled that long) lose the message popped
    # for it (broker.Poller reads unread replies on the same checks).
    assert "health_check_interval" not in app.conf.broker_transport_options


def test_a_queue_namespace_prefixes_every_queue() -> None:
    settings = make_settings(queue_namespace="blue.")
    app = create_celery(settings)
    assert queue_names(settings) == [
        "blue.optout.default", "blue.optout.push.voicenter", "blue.optout.background",
    ]  # fmt: skip
    assert app.conf.task_default_queue == "blue.optout.default"
    assert app.conf.beat_schedule["sweep"]["options"]["queue"] == "blue.optout.default"


def test_rabbitmq_broker_has_no_key_prefix() -> None:
    app = create_celery(make_settings(celery_broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    assert "global_keyprefix" not in app.conf.broker_transport_options


def test_a_redis_broker_uses_the_transport_that_survives_a_restart() -> None:
    app = create_celery(make_settings())
    assert app.conf.broker_transport == TRANSPORT
    connection = app.connection_for_write()
    assert isinstance(connection.transport, Transport)
    # The URL's host, port and database still reach the connection.
    assert connection.hostname == "unused.invalid" and connection.port == 1
    assert connection.virtual_host == "0"


def test_a_closed_channel_raises_a_connection_error_kombu_handles() -> None:
    connection = create_celery(make_settings()).connection_for_write()
    channel = Channel.__new__(Channel)  # as kombu leaves it once the connection is dropped
    channel.connection = None
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._connparams()
    assert redis.exceptions.ConnectionError in connection.transport.connection_errors


def test_rabbitmq_keeps_its_own_transport() -> None:
    app = create_celery(make_settings(celery_broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    assert app.conf.broker_transport is None
    assert app.connection_for_write().transport_cls == "amqp"


def test_providers_without_a_bulk_endpoint_get_a_worker_group_of_their_own() -> None:
    # Issue 13, item 14: a per-number push holds its worker for seconds; flushes, sweeps and
    # bulk pushes must never wait behind a backlog of them.
    env = {**env_for("voicenter", "http://v.test"), **env_for("voodoosms", "http://s.test"),
           **env_for("daktela", "http://d.test")}  # fmt: skip
    groups = worker_groups(make_settings(env))
    assert groups == {
        MAIN: [DEFAULT_QUEUE, push_queue("voicenter")],
        PER_NUMBER: [push_queue("voodoosms"), push_queue("daktela"), BACKGROUND_QUEUE],
    }
    assert set(worker_groups(make_settings())) == {MAIN}  # bulk providers only: one group


def test_scheduled_reconciliation_is_daily_on_the_background_queue_or_off() -> None:
    schedule = create_celery(make_settings()).conf.beat_schedule
    assert schedule["reconcile"]["schedule"].total_seconds() == 86400
    assert schedule["reconcile"]["options"]["queue"] == BACKGROUND_QUEUE
    off = create_celery(make_settings(reconcile_interval_hours=0)).conf.beat_schedule
    assert "reconcile" not in off


def test_beats_sweep_and_recover_carry_no_expiry_a_hosts_clock_would_judge() -> None:
    schedule = create_celery(make_settings()).conf.beat_schedule
    assert "expires" not in schedule["sweep"]["options"]
    assert "expires" not in schedule["recover"]["options"]
    # And no arguments: a worker not upgraded yet takes none.
    assert "args" not in schedule["sweep"] and "args" not in schedule["recover"]


def _sentinel_settings(**extra: Any) -> Settings:
    return make_settings(redis_url=None, redis_sentinels=["10.0.0.1:26379", "10.0.0.2:26380"],
                         redis_sentinel_master="optout", **extra)  # fmt: skip


def test_a_sentinel_broker_names_every_sentinel_and_the_master() -> None:
    settings = _sentinel_settings(redis_password="p@ss;", redis_sentinel_password="s-secret")
    # No trailing ';' (kombu would add localhost), the nodes' password in each URL, quoted.
    assert settings.broker_url == (
        "sentinel://:p%40ss%3B@10.0.0.1:26379/0;sentinel://:p%40ss%3B@10.0.0.2:26380/0"
    )
    app = create_celery(settings)
    options = app.conf.broker_transport_options
    assert options["master_name"] == "optout"
    assert options["sentinel_kwargs"]["password"] == "s-secret"
    assert options["sentinel_kwargs"]["socket_timeout"] <= 1  # a stopped Sentinel is skipped
    assert options["global_keyprefix"] == settings.key_prefix + "broker:"
    assert app.conf.broker_transport == SENTINEL_TRANSPORT
    connection = app.connection_for_write()
    assert isinstance(connection.transport, SentinelTransport)
    assert connection.password == "p@ss;"
    assert [urlsplit(u).port for u in connection.alt] == [26379, 26380]


def test_a_sentinel_channel_closed_under_it_raises_a_connection_error() -> None:
    channel = SentinelChannel.__new__(SentinelChannel)
    channel.connection = None
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._connparams()


def test_an_explicit_sentinel_broker_url_needs_the_master_name() -> None:
    settings = make_settings(celery_broker_url="sentinel://10.0.0.1:26379")
    with pytest.raises(ConfigError, match="OPTOUT_REDIS_SENTINEL_MASTER"):
        create_celery(settings)
    assert sentinel_options("amqp://h//", None) == {}
    assert transport_for("amqp://h//") is None


def test_the_next_url_of_a_broker_list_keeps_our_transport() -> None:
    # kombu moves to the next Sentinel's URL by its scheme alone: with kombu's own transport
    # there, a worker read NOREPLICAS after a failover as unrecoverable and exited.
    app = create_celery(_sentinel_settings())
    connection = app.connection_for_write()
    connection.maybe_switch_next()
    assert connection.port == 26380
    assert isinstance(connection.transport, SentinelTransport)
    plain = create_celery(make_settings(celery_broker_url="redis://a:1/0;redis://b:2/0"))
    connection = plain.connection_for_write()
    connection.maybe_switch_next()
    assert connection.hostname == "b" and isinstance(connection.transport, Transport)
