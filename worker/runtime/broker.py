"""kombu's Redis transports (plain and Sentinel), changed so a Celery worker survives a Redis
restart or failover, and the transport options every broker connection of ours takes."""

from __future__ import annotations

import contextlib
import select
import socket
from dataclasses import dataclass
from queue import Empty
from time import monotonic
from typing import Any

import redis
import structlog
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from config import ConfigError, Settings
from worker.runtime.redis_clients import OutageParser, sentinel_kwargs

log = structlog.get_logger("optout.broker")

#: What `broker_transport` names to use this module's transports.
TRANSPORT = "worker.runtime.broker:Transport"
SENTINEL_TRANSPORT = "worker.runtime.broker:SentinelTransport"
# kombu moves to the next URL of a list (each Sentinel is one) by that URL's scheme alone,
# forgetting the transport it was given (kombu.Connection.switch): after a failover a worker
# ran on kombu's own Sentinel transport, read NOREPLICAS as unrecoverable and exited (the
# failover drill). So each scheme names ours, whichever URL of the list is in use.
TRANSPORT_ALIASES.update({"redis": TRANSPORT, "rediss": TRANSPORT,
                          "sentinel": SENTINEL_TRANSPORT})  # fmt: skip
#: Broker URLs on Redis, in kombu's spelling.
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "sentinel://")


def transport_for(url: str) -> str | None:
    """The transport to name for a broker URL: ours for redis://, rediss:// and sentinel://,
    else None (kombu's own; redis+socket:// names its transport in the URL, which would win
    anyway)."""
    if url.startswith("sentinel://"):
        return SENTINEL_TRANSPORT
    return TRANSPORT if url.startswith(("redis://", "rediss://")) else None


@dataclass(frozen=True, slots=True)
class SentinelOptions:
    """What a sentinel:// broker URL cannot say: the master's name and the Sentinels' own
    password (the Redis nodes' goes in the URL)."""

    master: str
    password: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> SentinelOptions | None:
        if not settings.redis_sentinel_master:
            return None
        secret = settings.redis_sentinel_password
        return cls(settings.redis_sentinel_master, secret.get_secret_value() if secret else None)

    def transport_options(self) -> dict[str, Any]:
        return {"master_name": self.master, "sentinel_kwargs": sentinel_kwargs(self.password)}


def sentinel_options(url: str, sentinel: SentinelOptions | None) -> dict[str, Any]:
    """The transport options a sentinel:// URL needs (none for other URLs); a clear error when
    the master's name is missing, instead of kombu's."""
    if not url.startswith("sentinel://"):
        return {}
    if sentinel is None:
        raise ConfigError("a sentinel:// broker URL needs OPTOUT_REDIS_SENTINEL_MASTER")
    return sentinel.transport_options()


def _closed(channel: Any) -> None:
    # When Redis drops the connection, kombu releases it and then still acks, rejects or
    # restores unacknowledged messages through this closed channel: AttributeError on
    # `None`, "Unrecoverable error", and the worker exits (celery/kombu#582 and #970;
    # seen here on Redis restarts with work in flight). As a connection error it is what
    # kombu and Celery already handle: logged, the message left unacknowledged (the
    # visibility timeout returns it, and the pipeline's own sweep and lease recovery
    # redo its work long before), and the worker reconnects.
    if channel.connection is None or channel.connection.client is None:
        raise redis.exceptions.ConnectionError("the broker channel is closed")


class _OurChannel:
    """What our channels change in kombu's (plain and Sentinel alike)."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        _closed(self)
        params = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        # A primary refusing writes (NOREPLICAS) is a broker outage: read as a connection
        # error, which kombu and Celery reconnect from, not one that stops the worker.
        return {**params, "parser_class": OutageParser}


class Channel(_OurChannel, kombu_redis.Channel):  # type: ignore[misc]
    pass


class SentinelChannel(_OurChannel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    pass


def _readable(sock: socket.socket) -> bool:
    """Whether a reply waits on `sock`, without reading it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Poller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
    """kombu's poller, whose BRPOP check also frees a channel whose reply waits unread.

    kombu drops a BRPOP connection whose reply is overdue and whose socket has nothing to
    read (half-open), but passes over one whose reply is there, trusting the event loop to
    read it. When the loop no longer polls that socket (a reconnect kombu did not see: the
    channel counts as registered and sends each BRPOP on a socket nobody reads), the worker
    stops consuming for good without exiting; the failover drill saw it with refused pops
    (kombu#2629 is one such path). A reply overdue by `brpop_timeout + health_check_interval`,
    while the channel may take messages, is one the loop is not reading: this reads it (a
    message is delivered, a refusal drops the connection and is raised, as kombu's own handler
    raises it) and forgets the socket, so the next tick registers whichever socket the
    connection holds."""

    def maybe_check_brpop_health(self) -> None:
        now = monotonic()
        for channel in list(self._channels):
            connection = channel._in_poll
            sock = getattr(connection, "_sock", None)
            if (sock is None or channel._brpop_sent_at is None or not channel.brpop_timeout
                    or not channel.health_check_interval):  # fmt: skip
                continue
            waited = now - channel._brpop_sent_at
            if waited < channel.brpop_timeout + channel.health_check_interval:
                continue
            if sock.fileno() in self._paused_brpop or not channel.qos.can_consume():
                continue  # held unread on purpose until the worker has room
            if not _readable(sock):
                continue  # half-open: kombu's own check below drops it
            log.warning("broker_reply_unread", waited_seconds=round(waited),
                        action="reading it, registering the connection again")  # fmt: skip
            self._forget(channel)
            with contextlib.suppress(Empty):  # its BRPOP timed out: nothing to deliver
                channel._brpop_read()
            # Any other error goes on up, as from kombu's own handler: the read's (the
            # connection dropped) and the delivery's alike (the consumer's callback, e.g. an
            # ack refused with NOREPLICAS). Swallowed, the message stayed unacked on a
            # channel nobody reconnected, holding its prefetch credit: at the prefetch
            # limit the channel never consumed again. Celery's loop and drain_events'
            # callers reconnect from a connection error, with a fresh channel.
        super().maybe_check_brpop_health()

    def _forget(self, channel: Any) -> None:
        self._chan_to_sock.pop((channel, channel.client, "BRPOP"), None)
        for fd, (owner, kind) in list(self._fd_to_chan.items()):
            if owner is channel and kind == "BRPOP":
                del self._fd_to_chan[fd]


class _OurTransport:
    """What our transports change in kombu's: the poller."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()


class Transport(_OurTransport, kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelTransport(_OurTransport, kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel
