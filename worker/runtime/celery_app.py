"""All Celery plumbing in one place: the app, its queues and routes, beat, and log context."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from celery import Celery
from celery.signals import task_postrun, task_prerun
from kombu.entity import Exchange, Queue

from config import Settings
from worker.providers.base import Action
from worker.runtime.broker import REDIS_SCHEMES, SentinelOptions, sentinel_options, transport_for

DEFAULT_QUEUE = "optout.default"  # prefixed with OPTOUT_QUEUE_NAMESPACE when set
BACKGROUND_QUEUE = "optout.background"  # long work (scheduled reconciliation)
FLUSH_TASK = "optout.flush"
PUSH_TASK = "optout.push"
SWEEP_TASK = "optout.sweep"
RECOVER_TASK = "optout.recover"
REPLAY_TASK = "optout.replay"
RECONCILE_TASK = "optout.reconcile"
ARCHIVE_TASK = "optout.archive"
AUDIT_PURGE_TASK = "optout.audit_purge"
#: Worker groups: `optout worker` runs each as its own Celery worker (see worker_groups).
MAIN, PER_NUMBER = "main", "per-number"


def default_queue(namespace: str = "") -> str:
    return namespace + DEFAULT_QUEUE


def push_queue(provider: str, namespace: str = "") -> str:
    """Each provider has its own queue, so a slow one never starves the others."""
    return f"{namespace}optout.push.{provider}"


def queue_names(settings: Settings) -> list[str]:
    ns = settings.queue_namespace
    names = [default_queue(ns), *(push_queue(p, ns) for p in settings.enabled_providers())]
    return [*names, ns + BACKGROUND_QUEUE]


def worker_groups(settings: Settings) -> dict[str, list[str]]:
    """The queues of each worker group. Providers without a bulk endpoint hold a worker for
    seconds per chunk (a request per number, at their rate limit): they get a group of
    their own, so that while one drains a backlog the flushes, sweeps and bulk pushes of
    every other provider are never stuck behind it. Long background
    work (scheduled reconciliation) goes there too."""
    from worker.providers import CAPABILITIES

    ns = settings.queue_namespace
    enabled = settings.enabled_providers()
    slow = [p for p in enabled if not CAPABILITIES[p].bulk]
    main = [default_queue(ns), *(push_queue(p, ns) for p in enabled if p not in slow)]
    background = ns + BACKGROUND_QUEUE
    if not slow:
        return {MAIN: [*main, background]}
    return {MAIN: main, PER_NUMBER: [*(push_queue(p, ns) for p in slow), background]}


def _queue(name: str) -> Queue:
    # Its own exchange and routing key: a shared default key would copy every task to
    # every queue bound with it.
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once, JSON-only, one-task-at-a-time work."""
    app = Celery("optout", broker=settings.broker_url, include=["tasks.pipeline"])
    transport: dict[str, Any] = {"visibility_timeout": 3600}
    if settings.broker_url.startswith((*REDIS_SCHEMES, "unix://")):
        # Broker keys share the state's prefix, so one Redis can hold several deployments
        # (and tests can clean exactly what they wrote).
        transport["global_keyprefix"] = settings.key_prefix + "broker:"
    transport.update(sentinel_options(settings.broker_url, SentinelOptions.of(settings)))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # Our log lines are JSON already: not wrapped as WARNING "celery.redirected".
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        broker_transport=transport_for(settings.broker_url),
        task_default_queue=default_queue(settings.queue_namespace),
        task_queues=[_queue(name) for name in queue_names(settings)],
        task_create_missing_queues=True,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        beat_schedule={
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": timedelta(seconds=settings.sweep_interval_seconds),
                # No `expires`: Celery would judge it by each host's own clock (a worker
                # ahead of beat's would drop every run); see pipeline.on_schedule.
                "options": {"queue": default_queue(settings.queue_namespace)},
            },
            "recover": {
                "task": RECOVER_TASK,
                "schedule": timedelta(seconds=settings.recover_interval_seconds),
                "options": {"queue": default_queue(settings.queue_namespace)},
            },
            # The audit stream into the archive: often, so the Redis tail stays short.
            "archive": {
                "task": ARCHIVE_TASK,
                "schedule": timedelta(seconds=settings.archive_interval_seconds),
                "options": {"queue": default_queue(settings.queue_namespace)},
            },
            "audit_purge": {
                "task": AUDIT_PURGE_TASK,
                "schedule": timedelta(days=1),
                "options": {
                    "queue": settings.queue_namespace + BACKGROUND_QUEUE,
                    "expires": 86400,
                },
            },
            **_reconcile_schedule(settings),
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        timezone="UTC",
    )
    return app


def _reconcile_schedule(settings: Settings) -> dict[str, Any]:
    """Reconciliation as the safety net for what nobody has found yet (0: off)."""
    hours = settings.reconcile_interval_hours
    if hours <= 0:
        return {}
    return {
        "reconcile": {
            "task": RECONCILE_TASK,
            "schedule": timedelta(hours=hours),
            "options": {
                "queue": settings.queue_namespace + BACKGROUND_QUEUE,
                "expires": hours * 3600,
            },
        }
    }


class CeleryDispatcher:
    """Sends pipeline work as Celery tasks, by name, carrying only JSON-safe arguments."""

    def __init__(self, app: Celery, namespace: str = "") -> None:
        self.app = app
        self.namespace = namespace

    def flush(self, target: str, action: Action, mode: str, delay: float = 0.0) -> None:
        self.app.send_task(
            FLUSH_TASK,
            args=[target, action.value, mode],
            queue=default_queue(self.namespace),
            countdown=delay if delay > 0 else None,
        )

    def push(self, chunk_id: str, provider: str) -> None:
        self.app.send_task(PUSH_TASK, args=[chunk_id], queue=push_queue(provider, self.namespace))

    def replay(self, ids: list[str], who: str) -> None:
        self.app.send_task(REPLAY_TASK, args=[ids, who], queue=default_queue(self.namespace))


def celery_dispatcher(settings: Settings) -> CeleryDispatcher:
    """A dispatcher on its own Celery app for these settings (tests, tools)."""
    return CeleryDispatcher(create_celery(settings), settings.queue_namespace)


@task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect  # type: ignore[untyped-decorator]
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
