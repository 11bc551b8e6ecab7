"""The obvious design, for comparison: one Celery task and one HTTP request per number.

celery -A tests.perf.baseline worker -c 2   (BASELINE_BROKER and BASELINE_URL set)
"""

from __future__ import annotations

import os

import httpx
from celery import Celery


def make_app(broker: str, prefix: str) -> Celery:
    app = Celery("baseline", broker=broker)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue="baseline",
        broker_transport_options={"global_keyprefix": prefix},
    )
    app.task(name="baseline.push_one")(push_one)
    return app


_client: httpx.Client | None = None


def push_one(number: str) -> None:
    global _client  # noqa: PLW0603
    if _client is None:
        _client = httpx.Client(timeout=30)
    url = os.environ["BASELINE_URL"] + "/Blacklist/AddBlackList"
    _client.post(url, json={"Code": "good-code", "Phones": [{"Phone": number}]})


app = make_app(
    os.environ.get("BASELINE_BROKER", "redis://127.0.0.1:6379/0"),
    os.environ.get("BASELINE_PREFIX", "bl:"),
)
