"""Our kombu Redis transports under an event loop: a BRPOP reply nobody reads is read."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub

from tests.real_redis import RealRedis
from worker.runtime.broker import SENTINEL_TRANSPORT, TRANSPORT, Poller
from worker.runtime.redis_clients import WritesRefusedError

#: kombu checks BRPOP replies every `health_check_interval` seconds; short, for the test.
CHECK_SECONDS = 1


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-broker-{uuid.uuid4().hex[:8]}:"
    yield name
    with redis.Redis.from_url(RealRedis.url()) as client:
        for key in client.scan_iter(match=name + "*"):
            client.delete(key)


def _spin(hub: Hub, done: Callable[[], bool], seconds: float) -> bool:
    """Run the event loop, as a Celery worker does, until `done` or `seconds` pass."""
    loop = hub.create_loop()
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        next(loop)
    return done()


def _stop_polling(connection: Connection, channel: Any) -> None:
    """The state a reconnect kombu did not see leaves behind (kombu#2629): the channel counts
    as registered, but the loop no longer polls its socket, so the reply to the BRPOP out now
    waits unread, and no other BRPOP is sent."""
    cycle = connection.transport.cycle
    fd = channel.client.connection._sock.fileno()
    del cycle._fd_to_chan[fd]
    cycle._unregister_from_poll(fd)  # the event loop's remove_reader, when there is one


def test_our_transports_use_the_poller_that_reads_an_unread_reply() -> None:
    for name in (TRANSPORT, SENTINEL_TRANSPORT):
        with Connection("redis://unused.invalid:1/0", transport=name) as connection:
            assert type(connection.transport.cycle) is Poller


def test_a_brpop_reply_the_loop_stopped_reading_is_read_and_consuming_goes_on(
    prefix: str,
) -> None:
    options = {"global_keyprefix": prefix, "health_check_interval": CHECK_SECONDS}
    queue = Queue("stalled", Exchange("stalled", type="direct"), routing_key="stalled")
    received: list[Any] = []
    hub = Hub()
    with (
        Connection(RealRedis.url(), transport=TRANSPORT, transport_options=options) as ours,
        Connection(RealRedis.url(), transport=TRANSPORT, transport_options=options) as theirs,
    ):
        ours.transport.register_with_event_loop(ours.connection, hub)
        channel = ours.default_channel
        consumer = Consumer(channel, [queue], accept=["json"],
                            callbacks=[lambda body, message: (received.append(body),
                                                              message.ack())])  # fmt: skip
        consumer.consume()
        producer = Producer(theirs.default_channel, exchange=queue.exchange,
                            routing_key="stalled", serializer="json")  # fmt: skip
        producer.publish({"n": 1}, declare=[queue])
        assert _spin(hub, lambda: received == [{"n": 1}], 10)
        assert _spin(hub, lambda: bool(channel._in_poll), 5)  # the next BRPOP is out

        _stop_polling(ours, channel)  # the BRPOP's reply: its timeout's empty answer

        producer.publish({"n": 2})
        assert _spin(hub, lambda: received == [{"n": 1}, {"n": 2}], 10 + 2 * CHECK_SECONDS)
        producer.publish({"n": 3})  # and the connection is polled again
        assert _spin(hub, lambda: len(received) == 3, 5)
    hub.close()


@pytest.mark.parametrize("loop", ["drain_events", "celery_hub"])
def test_an_error_raised_delivering_an_unread_reply_reaches_the_consumer(
    prefix: str, loop: str
) -> None:
    # The consumer's callback fails (here its ack is refused: NOREPLICAS) for a message our
    # poller read. Raised, it is a connection error the consumer reconnects from (kombu's
    # ConsumerMixin around drain_events, Celery's loop, which propagates its connection
    # errors out of timers), as when kombu's own handler delivers. Swallowed, the message
    # held the channel's only prefetch slot, and the channel never consumed again.
    options = {"global_keyprefix": prefix, "health_check_interval": CHECK_SECONDS}
    queue = Queue("refused", Exchange("refused", type="direct"), routing_key="refused")
    seen: list[Any] = []

    def on_message(message: Any) -> None:
        seen.append(message.payload)
        raise WritesRefusedError("NOREPLICAS Not enough good replicas to write.")

    with (
        Connection(RealRedis.url(), transport=TRANSPORT, transport_options=options) as ours,
        Connection(RealRedis.url(), transport=TRANSPORT, transport_options=options) as theirs,
    ):
        hub = Hub()
        if loop == "celery_hub":
            ours.transport.register_with_event_loop(ours.connection, hub)
            hub.propagate_errors = ours.connection_errors  # as celery.worker.loops.asynloop
        channel = ours.default_channel
        producer = Producer(theirs.default_channel, exchange=queue.exchange,
                            routing_key="refused", serializer="json")  # fmt: skip
        producer.publish({"n": 1}, declare=[queue])
        Consumer(channel, [queue], accept=["json"], on_message=on_message,
                 prefetch_count=1).consume()  # fmt: skip
        ours.transport.cycle.on_poll_start()  # the BRPOP goes out; its reply, the message,
        assert channel._in_poll  # comes back
        _stop_polling(ours, channel)  # ... to a socket nobody polls

        deadline = time.monotonic() + 10 + 2 * CHECK_SECONDS
        with pytest.raises(WritesRefusedError):
            if loop == "celery_hub":
                _spin(hub, lambda: False, deadline - time.monotonic())
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    ours.drain_events(timeout=1)
        assert seen == [{"n": 1}]
        with redis.Redis.from_url(RealRedis.url()) as client:  # unacked: given back, not lost
            assert client.hlen(prefix + "unacked") == 1
        hub.close()
