"""kombu's Redis transport, changed so a Celery worker survives a Redis restart."""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

#: What `broker_transport` names to use this module's transport.
TRANSPORT = "worker.runtime.broker:Transport"


def transport_for(url: str) -> str | None:
    """The transport to name for a broker URL: ours for redis:// and rediss://, else None
    (kombu's own; redis+socket:// names its transport in the URL, which would win anyway)."""
    return TRANSPORT if url.startswith(("redis://", "rediss://")) else None


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    def _connparams(self, asynchronous: bool = False) -> Any:
        # When Redis drops the connection, kombu releases it and then still acks, rejects or
        # restores unacknowledged messages through this closed channel: AttributeError on
        # `None`, "Unrecoverable error", and the worker exits (celery/kombu#582 and #970;
        # seen here on Redis restarts with work in flight). As a connection error it is what
        # kombu and Celery already handle: logged, the message left unacknowledged (the
        # visibility timeout returns it, and the pipeline's own sweep and lease recovery
        # redo its work long before), and the worker reconnects.
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker channel is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
