"""A number's history: archive and Redis tail merged, newest first, paged, never twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes.dispatch import QueueDispatcher
from worker.archive.archiver import drain
from worker.archive.database import ArchiveError
from worker.archive.history import CursorError, history, parse_before
from worker.ingress.api import create_api
from worker.ops.views import number_view
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.auditlog import PendingEntry

N = "+972501234567"


def events(
    ctx: Context, dispatcher: QueueDispatcher, count: int, clock: Any, first: int = 0
) -> None:
    for i in range(first, first + count):
        accept(ctx, Event("api", Action.ADD, [PhoneInput(N)], reason=f"r{i}"))
        dispatcher.drain(ctx)
        clock.advance(1)


def test_pages_walk_the_whole_history_newest_first_without_duplicates(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    events(actx, dispatcher, 6, clock)
    drain(actx)  # the older ones archived...
    events(actx, dispatcher, 3, clock, first=6)  # ...the newer ones still in Redis
    # (one archived again by a drain that crashed before its cleanup: in both places)
    actx.archive.write(actx.store.pending_audit(1))
    seen: list[dict[str, Any]] = []
    before = None
    while True:
        view = number_view(actx, N, limit=4, before=before)
        assert view["archive"] == "ok"
        seen += view["audit"]
        before = view["audit_next"]
        if before is None:
            break
    ids = [e["id"] for e in seen]
    assert len(ids) == len(set(ids))
    assert [e["reason"] for e in seen if "event_id" in e] == [f"r{i}" for i in range(8, -1, -1)]
    assert [e["at"] for e in seen] == sorted((e["at"] for e in seen), reverse=True)


def test_with_the_archive_down_the_redis_tail_still_shows(
    actx: Context, dispatcher: QueueDispatcher, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events(actx, dispatcher, 2, clock)

    def down(*_: Any) -> Any:
        raise ArchiveError("archive unavailable: OperationalError: connection refused")

    monkeypatch.setattr(actx.archive, "page", down)
    page = history(actx, N, 50)
    assert len(page.entries) == 3  # the first's accept and push; the second's accept
    assert page.archive.startswith("archive unavailable")


def test_a_cursor_or_an_iso_time_bounds_a_page() -> None:
    assert parse_before("1800000000000:1796000000000-2") == (
        1800000000000, 1796000000000000002, "1796000000000-2"
    )  # fmt: skip
    assert parse_before("2027-01-15T08:00:00Z") == (1800000000000, 0, "")
    with pytest.raises(CursorError):
        parse_before("yesterday")


def test_the_api_pages_a_numbers_history(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    events(actx, dispatcher, 3, clock)
    drain(actx)
    api = TestClient(create_api(lambda: actx))
    auth = {"Authorization": "Bearer admin"}
    first = api.get(f"/v1/numbers/{N}?limit=3", headers=auth).json()
    assert len(first["audit"]) == 3 and first["audit_next"]
    rest = api.get(f"/v1/numbers/{N}", params={"before": first["audit_next"]}, headers=auth)
    assert len(rest.json()["audit"]) == 1 and rest.json()["audit_next"] is None
    bad = api.get(f"/v1/numbers/{N}?before=soon", headers=auth)
    assert bad.status_code == 422 and bad.json()["error"] == "bad_cursor"


def test_a_page_that_ends_between_entries_of_one_time_and_order_skips_neither(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    # An older process's entry in `audit:log` and a new one's row of `audit:batches`,
    # written in the same ms (a rolling upgrade): one time, one seq, two ids.
    events(actx, dispatcher, 1, clock)
    (row,) = [e for e in actx.store.pending_audit(100) if e.number == N][:1]
    at = json.loads(row.body)["at"]
    ms = row.entry_id.split("-", 1)[0]
    legacy = PendingEntry(f"{ms}-0", N, json.dumps({"at": at, "act": "add", "rsn": "old"}))
    actx.archive.write([legacy, PendingEntry(f"{ms}-0.0", N, row.body)])
    ids, before = [], None
    while True:
        page = history(actx, N, 1, before)
        ids += [e.entry_id for e in page.entries]
        if page.next_before is None:
            break
        before = page.next_before
    assert f"{ms}-0" in ids and f"{ms}-0.0" in ids
    assert len(ids) == len(set(ids))
