"""The archiver: entries move from Redis into the archive exactly once, a number keeps no
audit key in Redis once all are archived, an archive that is down loses nothing, and the
backlog raises an alarm, then holds accepts back."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from tests.fakes.dispatch import QueueDispatcher
from tests.worker.state.scene import lease
from worker.archive.archiver import archive_pending, backlog_report, drain, over_limit
from worker.archive.database import Archive, ArchiveError
from worker.ingress.api import create_api
from worker.pipeline.accept import AuditBacklogError, Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.pipeline.push import push
from worker.providers.base import Action

PHONES = [f"+9725012345{i:02d}" for i in range(20)]


def opt_out(ctx: Context, dispatcher: QueueDispatcher, phones: list[str] = PHONES) -> None:
    accept(ctx, Event("api", Action.ADD, [PhoneInput(p) for p in phones]))
    dispatcher.drain(ctx)  # pushed: each number has its accept and its provider's answer


def audit_keys(ctx: Context) -> list[bytes]:
    """The audit keys beside the streams and their count: numbers' tails."""
    shared = {ctx.store.key("audit", k).encode() for k in ("log", "batches", "rows")}
    return [k for k in ctx.store.redis.keys(ctx.store.key("audit", "*")) if k not in shared]


def test_a_drain_archives_every_entry_once_and_leaves_nothing_behind(
    actx: Context, dispatcher: QueueDispatcher
) -> None:
    opt_out(actx, dispatcher)
    written = {e.entry_id for e in actx.store.pending_audit(1000)}
    assert len(written) == 40
    # One stream entry a script call (the accept, the push's completion), not one a number.
    assert actx.store.redis.xlen(actx.store.key("audit", "batches")) == 2
    assert archive_pending(actx) == 40
    assert audit_keys(actx) == []
    assert actx.store.audit_backlog().entries == 0
    archived = list(actx.archive.between(None, None))
    assert {e.entry_id for e in archived} == written
    assert {e.number for e in archived} == set(PHONES)


def test_batches_go_in_order_until_the_stream_is_empty(
    make_ctx: Any, archive: Archive, dispatcher: QueueDispatcher
) -> None:
    ctx = make_ctx(archive_batch=7)
    ctx.archive = archive
    opt_out(ctx, dispatcher)
    assert drain(ctx) == 40
    assert archive.count(None, None) == 40


def test_a_crash_between_commit_and_cleanup_archives_nothing_twice(
    actx: Context, dispatcher: QueueDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt_out(actx, dispatcher)

    def crash(_: object) -> int:
        raise ConnectionError("the worker died here")

    with monkeypatch.context() as patched:
        patched.setattr(actx.store, "forget_archived", crash)
        with pytest.raises(ConnectionError):
            drain(actx)
    assert actx.store.audit_backlog().entries == 40  # still in Redis
    assert drain(actx) == 40  # the next drain inserts them again: no-ops
    assert actx.archive.count(None, None) == 40
    assert audit_keys(actx) == []


def test_an_archive_that_is_down_loses_nothing_and_catches_up(
    actx: Context, dispatcher: QueueDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt_out(actx, dispatcher)
    working = actx.archive

    def down(*_: Any) -> int:
        raise ArchiveError("archive unavailable: OperationalError: connection refused")

    monkeypatch.setattr("worker.archive.archiver._complaints.last", {})
    with monkeypatch.context() as patched:
        patched.setattr(working, "write", down)
        with capture_logs() as logs:
            assert archive_pending(actx) == 0
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["archive_unavailable"]
        opt_out(actx, dispatcher, ["+972509999999"])  # accepts go on meanwhile
    assert actx.store.audit_backlog().entries == 42
    assert archive_pending(actx) == 42
    assert actx.archive.count(None, None) == 42


def test_only_one_drain_runs_at_a_time(actx: Context, dispatcher: QueueDispatcher) -> None:
    opt_out(actx, dispatcher)
    token = actx.store.take_turn("archive", 30)
    assert token is not None
    assert archive_pending(actx) == 0  # another holds the turn
    actx.store.give_turn_back("archive", token)
    assert archive_pending(actx) == 40


def test_the_backlog_reports_the_oldest_entrys_age(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    opt_out(actx, dispatcher)
    clock.advance(90)
    report = backlog_report(actx)
    assert (report["entries"], report["lag_seconds"], report["alarm"]) == (40, 90.0, False)


def test_above_the_alarm_an_error_is_logged_and_readyz_says_so(
    make_ctx: Any, archive: Archive, dispatcher: QueueDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(audit_backlog_alarm=10, admin_token="admin")
    ctx.archive = archive
    opt_out(ctx, dispatcher)
    monkeypatch.setattr("worker.archive.archiver._complaints.last", {})
    monkeypatch.setattr(ctx.store, "take_turn", lambda *_: None)  # no drain gets its turn
    with capture_logs() as logs:
        archive_pending(ctx)
    alarms = [e for e in logs if e["event"] == "audit_backlog_alarm"]
    assert alarms and alarms[0]["log_level"] == "error" and alarms[0]["entries"] == 40
    monkeypatch.setattr("worker.ingress.api.broker_check", lambda _: "ok")
    ready = TestClient(create_api(lambda: ctx)).get("/readyz")
    assert ready.status_code == 200  # an alarm, not yet a refusal
    assert ready.json()["audit_backlog"]["alarm"] is True


def test_at_the_limit_accepts_are_refused_with_503_until_it_drains(
    make_ctx: Any, archive: Archive, dispatcher: QueueDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(audit_backlog_alarm=10, audit_backlog_limit=30, admin_token="admin")
    ctx.archive = archive
    opt_out(ctx, dispatcher)
    ctx.backlog_seen = (float("-inf"), 0)  # look again now, not in a second
    with pytest.raises(AuditBacklogError):
        accept(ctx, Event("api", Action.ADD, [PhoneInput("+972509999999")]))
    api = TestClient(create_api(lambda: ctx))
    ctx.backlog_seen = (float("-inf"), 0)
    refused = api.post("/v1/optouts", headers={"Authorization": "Bearer admin"},
                       json={"action": "add", "phones": ["+972509999999"]})  # fmt: skip
    assert refused.status_code == 503 and refused.json()["error"] == "audit_backlog"
    assert refused.headers["Retry-After"]
    monkeypatch.setattr("worker.ingress.api.broker_check", lambda _: "ok")
    assert api.get("/readyz").status_code == 503
    drain(ctx)
    ctx.backlog_seen = (float("-inf"), 0)
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972509999999")]))
    assert ctx.store.ledger("+972509999999")["s"] == "blocked"


def test_the_metrics_show_backlog_and_lag(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    opt_out(actx, dispatcher)
    clock.advance(5)
    text = TestClient(create_api(lambda: actx)).get("/metrics").text
    assert "optout_audit_backlog_entries 40.0" in text
    assert "optout_audit_archive_lag_seconds 5.0" in text


def test_entries_the_release_before_kept_in_a_tail_only_are_archived_too(
    actx: Context, dispatcher: QueueDispatcher
) -> None:
    # Found by review: the release before wrote an audit entry onto the number's tail only
    # (no stream, no id), and so does an old process during a rolling upgrade. The drains
    # read the stream alone: such an entry (a provider's answer: the only record that an
    # opt-out was honoured there) never reached the archive, no evidence export held it,
    # and the first backlog longer than the cap trimmed it out of Redis for good.
    from worker.archive.export import evidence

    n = PHONES[0]
    old = [
        '{"at":1700000000000,"ev":"e1","src":"api","act":"add","rsn":"","t":1700000000000,'
        '"x":0,"res":"applied","v":1}',
        '{"prov":"voicenter","at":1700000001000,"act":"add","out":"done","rsn":"","det":"",'
        '"v":1,"n":0}',
    ]
    for entry in old:
        actx.store.redis.lpush(actx.store.key("audit", n), entry)
    opt_out(actx, dispatcher, [n])
    archive_pending(actx)
    assert audit_keys(actx) == []
    archived = [e.raw for e in actx.archive.between(None, None, n)]
    assert [e.get("at") for e in archived][:2] == [1700000000000, 1700000001000]
    assert len(archived) == 4
    assert [e.get("outcome") for e in evidence(actx, n)][:2] == [None, "done"]


def _staged(ctx: Context, phones: list[str] = PHONES) -> None:
    """Accepted and not pushed yet: the flushes are queued, never run."""
    accept(ctx, Event("api", Action.ADD, [PhoneInput(p) for p in phones]))


def test_a_run_waits_while_numbers_wait_to_be_pushed(
    actx: Context, dispatcher: QueueDispatcher
) -> None:
    _staged(actx)
    assert archive_pending(actx) == 0
    assert actx.store.audit_backlog().entries == 20  # waiting in Redis, nothing lost


def test_a_run_waits_while_a_push_is_in_flight(actx: Context, dispatcher: QueueDispatcher) -> None:
    _staged(actx)
    chunk = lease(actx.store)  # taken for a push that has not answered yet
    assert actx.store.leased() == 1
    assert archive_pending(actx) == 0
    push(actx, chunk.id)  # it answers
    assert archive_pending(actx) == 40


def test_a_run_waits_no_longer_than_the_defer_time(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    _staged(actx)
    clock.advance(actx.settings.archive_defer_seconds - 1)
    assert archive_pending(actx) == 0
    clock.advance(1)
    assert archive_pending(actx) == 20


@pytest.mark.parametrize("overrides", [{"audit_backlog_alarm": 40}, {"archive_defer_seconds": 0}])
def test_a_run_never_waits_at_half_the_alarm_or_with_the_defer_time_zero(
    make_ctx: Any, archive: Archive, overrides: dict[str, Any]
) -> None:
    ctx = make_ctx(**overrides)
    ctx.archive = archive
    _staged(ctx)
    assert archive_pending(ctx) == 20


def test_a_drain_that_finds_the_pushes_begun_gives_them_the_worker_back(
    make_ctx: Any, archive: Archive, dispatcher: QueueDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.state.auditlog.BATCH_PAGE", 1)  # batches of 7 rows, or more
    ctx = make_ctx(archive_batch=7)
    for i in range(0, 20, 5):
        opt_out(ctx, dispatcher, PHONES[i : i + 5])  # 40 entries in 8 stream entries of 5

    class StagingMidway:
        """The archive, while a bulk arrives after the drain's first batch."""

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def __getattr__(self, name: str) -> Any:
            return getattr(archive, name)

        def write(self, batch: Any) -> int:
            self.sizes.append(len(batch))
            if len(self.sizes) == 1:
                _staged(ctx, ["+972509999999"])
            return archive.write(batch)

    ctx.archive = staging = StagingMidway()  # type: ignore[assignment]
    assert archive_pending(ctx) == staging.sizes[0] == 10
    assert drain(ctx) == 40 + 1 - 10  # an operator's drain does not wait: all that is left


def test_a_run_never_waits_while_accepts_are_refused(make_ctx: Any, archive: Archive) -> None:
    # Found by review: OPTOUT_AUDIT_BACKLOG_LIMIT may equal the alarm, and a backlog at it
    # (not above the alarm) was left waiting for the pushes while accepts were refused:
    # opt-outs answered 503 for up to OPTOUT_ARCHIVE_DEFER_SECONDS for nothing.
    ctx = make_ctx(audit_backlog_alarm=20, audit_backlog_limit=20)
    ctx.archive = archive
    _staged(ctx)
    ctx.backlog_seen = (float("-inf"), 0)  # looked at again now
    assert over_limit(ctx) == 20  # refusing
    assert archive_pending(ctx) == 20
    ctx.backlog_seen = (float("-inf"), 0)
    assert over_limit(ctx) is None


def test_a_drain_that_yields_to_the_pushes_still_adopts_the_tails(
    make_ctx: Any, archive: Archive, clock: Any
) -> None:
    # Found by review: a drain that caught up and found new pushes gave the worker back
    # before the tails' step, and the next run waits again for new entries: with accepts
    # and pushes never pausing for 30 s, entries the release before (or an old process of
    # a rolling upgrade) kept in a tail only never reached the stream, where the old
    # process's cap could trim them out of Redis for good.
    ctx = make_ctx()
    n = PHONES[0]
    old = '{"at":1700000000000,"ev":"e1","src":"api","act":"add","rsn":"","t":1700000000000,"x":0,"res":"applied","v":1}'  # noqa: E501
    ctx.store.redis.lpush(ctx.store.key("audit", n), old)
    _staged(ctx)
    clock.advance(ctx.settings.archive_defer_seconds)

    class Busy:
        """The archive, while accepts and pushes go on: each write, another number."""

        def __init__(self) -> None:
            self.writes = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(archive, name)

        def write(self, batch: Any) -> int:
            self.writes += 1
            _staged(ctx, [f"+9725099999{self.writes:02d}"])
            return archive.write(batch)

    ctx.archive = Busy()  # type: ignore[assignment]
    archive_pending(ctx)
    archived = [e.raw.get("at") for e in archive.between(None, None, n)]
    waiting = [e.body for e in ctx.store.pending_audit(1000) if e.number == n]
    assert 1700000000000 in archived or any("1700000000000" in b for b in waiting)
