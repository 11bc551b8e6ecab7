"""The RabbitMQ on 127.0.0.1:5672 that tests and drills share: whether it answers, and removing
exactly the queues a test declared."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from kombu import Connection

RABBIT = "amqp://guest:guest@127.0.0.1:5672//"


def rabbit_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def delete_queues(names: Iterable[str]) -> None:
    """Each named queue and its exchange of the same name (ours are declared so), those that
    exist; best effort, since RabbitMQ may be what a drill stopped."""
    try:
        with Connection(RABBIT, connect_timeout=3) as conn:
            channel = conn.channel()
            for name in names:
                try:
                    channel.queue_delete(name)
                    channel.exchange_delete(name)
                except Exception:  # noqa: BLE001
                    channel = conn.channel()  # gone already: the channel closed, open another
    except OSError:
        pass
