"""Broker ingress: a kombu consumer (AMQP or Redis) that acks a message only once accepted.

A message is JSON: the `/v1/optouts` shape, a Voicenter CDR, or a DNC trigger. The header
`x-optout-kind` (`optout`, `cdr`, `dnc`) says which; without it the fields do (`ivruniqueid`:
a CDR; `phoneNumber` + `requestUUID`: a DNC trigger; `action` or `phones`: an opt-out). An
invalid message is parked on `<queue>.rejected` with the reason in the header
`x-rejected-reason`; it is never dropped silently. While Redis cannot take a message it is
requeued, not acked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.mixins import ConsumerMixin
from pydantic import ValidationError

from config import kombu_url
from worker.domain.errors import OptoutError
from worker.ingress import cdr as cdrs
from worker.ingress.schemas import DncTrigger, OptoutRequest, dnc_event, optout_event
from worker.pipeline.accept import AcceptError, Event, StoreUnavailableError, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime.broker import REDIS_SCHEMES, SentinelOptions, sentinel_options, transport_for

log = structlog.get_logger("optout.consumer")

KIND_HEADER = "x-optout-kind"
REASON_HEADER = "x-rejected-reason"
DEFAULT_SOURCE = "broker"
#: A copy we publish (given back, or parked) waits this long for a broker that reconnects.
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 0.5,
                 "interval_max": 2.0}  # fmt: skip


class RejectedMessageError(OptoutError):
    """The message can never be accepted as it is; `reason` says why, and `message` (the
    parked message's header) adds what was wrong."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason, reason)


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )[:300]


def interpret(
    ctx: Context, body: bytes, headers: dict[str, Any], allow_remove: bool
) -> Event | None:
    """The accept Event a message carries; None for a CDR that needs no queueing."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RejectedMessageError("not_json") from None
    if not isinstance(data, dict):
        raise RejectedMessageError("not_a_json_object")
    kind = str(headers.get(KIND_HEADER) or "")
    if not kind:
        if "ivruniqueid" in data:
            kind = "cdr"
        elif "phoneNumber" in data and "requestUUID" in data:
            kind = "dnc"
        elif "action" in data or "phones" in data:
            kind = "optout"
        else:
            raise RejectedMessageError("unknown_message", "no kind header and no known fields")
    try:
        if kind == "optout":
            request = OptoutRequest.model_validate(data)
            if request.action == Action.REMOVE.value and not allow_remove:
                raise RejectedMessageError(
                    "remove_not_allowed", "start the consumer with --allow-remove"
                )
            return optout_event(request, default_source=DEFAULT_SOURCE)
        if kind == "dnc":
            return dnc_event(DncTrigger.model_validate(data))
        if kind == "cdr":
            outcome = cdrs.interpret(cdrs.decode(data), ctx.settings, ctx.own_numbers)
            return cdrs.book(ctx.store, outcome, ctx.replication())
    except ValidationError as exc:
        raise RejectedMessageError(f"invalid_{kind}", _problems(exc)) from None
    except cdrs.UnparseableCdrError as exc:
        raise RejectedMessageError(exc.reason, exc.message) from None
    raise RejectedMessageError("unknown_kind", repr(kind))


class OptoutConsumer(ConsumerMixin):  # type: ignore[misc]
    """Consumes one queue; SIGTERM (should_stop) finishes the message in hand and stops."""

    def __init__(
        self,
        ctx: Context,
        connection: Connection,
        queue: str,
        prefetch: int = 10,
        allow_remove: bool = False,
    ) -> None:
        self.ctx = ctx
        self.connection = connection
        self.queue = _queue(queue)
        self.parking = _queue(queue + ".rejected")
        self.prefetch = prefetch
        self.allow_remove = allow_remove
        self.handled = 0
        #: Called about once a second while consuming (e.g. to hand metrics over).
        self.tick: Callable[[], None] = lambda: None

    def on_iteration(self) -> None:
        self.tick()

    def get_consumers(self, consumer_cls: Any, channel: Any) -> list[Any]:
        self.parking.bind(channel).declare()
        return [
            consumer_cls(
                queues=[self.queue],
                on_message=self.on_message,
                prefetch_count=self.prefetch,
                accept=None,
            )
        ]

    def on_message(self, message: Message) -> None:
        headers = dict(message.headers or {})
        try:
            event = interpret(self.ctx, message.body, headers, self.allow_remove)
            if event is not None:
                accept(self.ctx, event)
        except RejectedMessageError as exc:
            self._park(message, exc.message)
        except StoreUnavailableError as exc:
            # Not our message's fault: back on the queue, and slow down.
            log.warning("consumer_store_unavailable", error=exc.message)
            self._give_back(message)
            time.sleep(1.0)
            return
        except AcceptError as exc:
            self._park(message, f"{exc.reason}: {exc.message}")
        else:
            message.ack()
        self.handled += 1

    def _give_back(self, message: Message) -> None:
        """Return a message we could not accept to its queue. RabbitMQ keeps it: requeue. On
        Redis, kombu's requeue copies it back from its record of unacked messages, and a
        failover can lose that record (written an instant after the pop that reached the
        new primary): the message would be gone. So there it is published again from the copy
        in hand first, then acked (a second copy, should the record survive too, is a
        repeat the accept absorbs)."""
        if self.connection.transport.driver_type != "redis":
            message.requeue()
            return
        self._publish(message, self.queue, dict(message.headers or {}))
        message.ack()

    def _park(self, message: Message, reason: str) -> None:
        headers = {**dict(message.headers or {}), REASON_HEADER: reason[:500]}
        self._publish(message, self.parking, headers)
        message.ack()  # parked durably first, then dropped from the input queue
        log.warning("message_parked", queue=self.queue.name, reason=reason[:200])

    def _publish(self, message: Message, queue: Queue, headers: dict[str, Any]) -> None:
        """A copy of `message` on `queue`, durable; retried while the broker reconnects (the
        original stays unacked meanwhile)."""
        with self.connection.Producer() as producer:
            producer.publish(
                message.body,
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                declare=[queue],
                headers=headers,
                content_type=message.content_type or "application/json",
                content_encoding=message.content_encoding or "utf-8",
                serializer=None,
                delivery_mode=2,
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )


def connect(
    url: str,
    key_prefix: str = "",
    visibility_timeout: float = 60.0,
    sentinel: SentinelOptions | None = None,
) -> Connection:
    """A broker connection. On Redis its keys carry our prefix, like Celery's do, and a
    message taken by a consumer that died is given back after `visibility_timeout` (RabbitMQ
    gives it back as soon as the connection drops). A sentinel:// URL takes the master's name
    and the Sentinels' password from `sentinel`."""
    url = kombu_url(url)
    options: dict[str, Any] = sentinel_options(url, sentinel)
    if url.startswith(REDIS_SCHEMES):
        options["visibility_timeout"] = visibility_timeout
        # kombu's default sweep for expired unacked messages runs only every ~100 s
        # (10 s x a throttle of 10), whatever the visibility timeout: make it follow it.
        options["unacked_restore_interval"] = max(1, min(10, int(visibility_timeout / 2)))
        options["unacked_restore_throttle"] = 1
        if key_prefix:
            options["global_keyprefix"] = key_prefix + "ingress:"
    return Connection(url, transport=transport_for(url), heartbeat=30, connect_timeout=5,
                      transport_options=options)  # fmt: skip
