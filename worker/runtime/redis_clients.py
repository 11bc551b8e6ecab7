"""The state store's Redis clients: one Redis at REDIS_URL, or whichever primary Sentinel names."""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from config import Settings

#: How long one Sentinel may take to answer before the next is asked: a Sentinel that is down
#: or stopped must not hold a client that the others could answer.
SENTINEL_TIMEOUT = 1.0


class WritesRefusedError(redis.ConnectionError):
    """The primary refuses writes for now (NOREPLICAS: fewer replicas than its
    `min-replicas-to-write`, as right after a failover or while a replica is down). An outage
    to wait out, as a lost connection is: the client retries it, the API answers 503, tasks
    retry, kombu reconnects; as redis-py's plain ResponseError it was none of these, and a
    Celery worker on a Redis broker exited ("Unrecoverable error") on its first ack."""


def _refused(response: str) -> bool:
    # Redis 7 answers a script's refused write with the code itself; 6.x wraps it in ERR
    # ("Error running script ...: -NOREPLICAS Not enough ...").
    return response.startswith("NOREPLICAS ") or "-NOREPLICAS " in response


def _outage_parser(base: type[Any]) -> type[Any]:
    """redis-py's parser `base` (hiredis when installed), with a refused write read as an
    outage (WritesRefusedError)."""

    def parse_error(response: str) -> Exception:
        if _refused(response):
            return WritesRefusedError(response)
        return cast(Exception, base.parse_error(response))

    # A classmethod in redis-py, bound once as hiredis' reply-error callback.
    return type(f"Outage{base.__name__}", (base,), {"parse_error": staticmethod(parse_error)})


OutageParser = _outage_parser(redis.connection.DefaultParser)
AsyncOutageParser = _outage_parser(aredis.connection.DefaultParser)


def redis_client(settings: Settings) -> redis.Redis:
    """The store's client. With Sentinel it asks the Sentinels for the primary on every new
    connection, so after a failover its next attempt reaches the new primary (a write to the
    old one, back as a replica, is a connection error: retried, or a 503 for the sender)."""
    options = {**_options(Retry), "parser_class": OutageParser}
    return cast("redis.Redis", _client(settings, Sentinel, redis.Redis, options))


def async_redis_client(settings: Settings) -> aredis.Redis:
    """The same client for an event loop (the API's accept path)."""
    options = {**_options(AsyncRetry), "parser_class": AsyncOutageParser}
    return cast("aredis.Redis", _client(settings, AsyncSentinel, aredis.Redis, options))


def clock_client(settings: Settings) -> redis.Redis:
    """A client for the server clock's readings, quick to give up: the first reading is taken
    on the caller's thread (the API's event loop too), later ones in the background."""
    options: dict[str, Any] = {"socket_timeout": 1, "socket_connect_timeout": 1,
                               "retry": Retry(NoBackoff(), 0)}  # fmt: skip
    return cast("redis.Redis", _client(settings, Sentinel, redis.Redis, options))


def primary(client: redis.Redis) -> str:
    """Where `client`'s writes go now, for people: `host:port` as the Sentinels name it (the
    first that answers), or the host it was given. Raises redis.RedisError when no Sentinel
    answers."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
        return f"{host}:{port}"
    given = pool.connection_kwargs
    if "path" in given:
        return f"unix:{given['path']}"
    return f"{given.get('host', 'localhost')}:{given.get('port', 6379)}"


def primary_or_reason(client: redis.Redis) -> str:
    """`primary`, or "unknown: <error>" when no Sentinel answers (for reports that never
    raise: /readyz, check-config)."""
    try:
        return primary(client)
    except redis.RedisError as exc:
        return f"unknown: {type(exc).__name__}"


def _client(
    settings: Settings,
    sentinel: type[Sentinel | AsyncSentinel],
    plain: type[Any],
    options: dict[str, Any],
) -> Any:
    """A client of the primary the Sentinels name, or of REDIS_URL: sync or asyncio by the
    classes given."""
    auth = _node_auth(settings)
    if settings.redis_sentinels:
        found = sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings),
                         **auth)  # fmt: skip
        return found.master_for(_master(settings), redis_class=plain, **options)
    return plain.from_url(settings.state_redis_url, **auth, **options)


def _options(retry: type[Retry] | type[AsyncRetry]) -> dict[str, Any]:
    # Fail within about a second when Redis is down: the API answers 503 so the sender
    # retries, and Celery retries tasks, so long client-side retry loops only add latency.
    return {
        "socket_timeout": 5,
        "socket_connect_timeout": 1,
        "health_check_interval": 30,
        "retry": retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
    }


def _master(settings: Settings) -> str:
    assert settings.redis_sentinel_master is not None  # the settings refuse Sentinels without
    return settings.redis_sentinel_master


def sentinel_kwargs(password: str | None) -> dict[str, Any]:
    """How to talk to the Sentinels themselves (redis-py's and kombu's `sentinel_kwargs`):
    their own password, and short timeouts."""
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT,
                              "socket_connect_timeout": SENTINEL_TIMEOUT}  # fmt: skip
    if password:
        kwargs["password"] = password
    return kwargs


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    secret = settings.redis_sentinel_password
    return sentinel_kwargs(secret.get_secret_value() if secret else None)


def _node_auth(settings: Settings) -> dict[str, Any]:
    """The Redis nodes' password (OPTOUT_REDIS_PASSWORD), when set; REDIS_URL may carry its
    own instead."""
    if settings.redis_password is None or not settings.redis_password.get_secret_value():
        return {}
    return {"password": settings.redis_password.get_secret_value()}
