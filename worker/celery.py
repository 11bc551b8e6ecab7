"""The Celery app instance for `celery -A worker ...` and the `optout` commands."""

from __future__ import annotations

from worker.runtime.wiring import celery_app

app = celery_app()
