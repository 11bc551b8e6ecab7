"""kombu's Redis transport, changed so a Celery worker survives a Redis restart."""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

#: What `broker_transport` names to use this module's transport.
TRANSPORT = "worker.broker:Transport"


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    # When the connection drops, kombu closes the channel and restores unacknowledged
    # messages through the connection it has just released: AttributeError, "Unrecoverable
    # error", and the worker exits (celery/kombu#582 and #970, seen here on every Redis
    # restart with work in flight). Leave them to the visibility timeout instead: the
    # pipeline's own sweep and lease recovery redo that work long before it expires, and
    # a late copy finds its chunk done.
    restore_at_shutdown = False


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
