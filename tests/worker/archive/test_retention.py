"""Retention: a scheduled purge drops what is older than OPTOUT_AUDIT_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from tests.fakes.dispatch import QueueDispatcher
from worker.archive.archiver import drain
from worker.archive.database import Archive
from worker.archive.retention import purge_expired
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.runtime.celery_app import AUDIT_PURGE_TASK, create_celery


def test_entries_older_than_the_retention_go_the_rest_stay(
    make_ctx: Any, archive: Archive, dispatcher: QueueDispatcher, clock: Any
) -> None:
    ctx = make_ctx(audit_retention_days=30)
    ctx.archive = archive
    from worker.providers.base import Action

    accept(ctx, Event("api", Action.ADD, [PhoneInput(f"+97250123456{i}") for i in range(5)]))
    clock.advance(20 * 86400)
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972501234569")]))
    drain(ctx)
    clock.advance(11 * 86400)  # the first five are 31 days old now, the last 11
    with capture_logs() as logs:
        assert purge_expired(ctx, batch=2) == 5
    (line,) = [e for e in logs if e["event"] == "audit_retention_purged"]
    assert line["entries"] == 5 and line["retention_days"] == 30
    assert [e.number for e in archive.between(None, None)] == ["+972501234569"]
    assert purge_expired(ctx) == 0


def test_beat_runs_the_purge_daily() -> None:
    from tests.conftest import make_settings

    schedule = create_celery(make_settings()).conf.beat_schedule
    assert schedule["audit_purge"]["task"] == AUDIT_PURGE_TASK
    assert schedule["audit_purge"]["schedule"].total_seconds() == 86400
