"""Evidence exports: oldest first, archived and waiting entries alike, each once; CSV and
JSON Lines, from the CLI and the API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.fakes.dispatch import QueueDispatcher
from tests.worker.cli.conftest import cli_builds
from worker.archive.archiver import drain
from worker.archive.export import CSV_COLUMNS, as_csv, evidence
from worker.cli.main import app
from worker.ingress.api import create_api
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

N, OTHER = "+972501234567", "+972501234568"
AUTH = {"Authorization": "Bearer admin"}


def history(ctx: Context, dispatcher: QueueDispatcher, clock: Any) -> None:
    """Two numbers: an opt-out each, archived; then another for N, not yet archived."""
    accept(ctx, Event("api", Action.ADD, [PhoneInput(N), PhoneInput(OTHER)]))
    dispatcher.drain(ctx)
    drain(ctx)
    clock.advance(60)
    accept(ctx, Event("crm", Action.ADD, [PhoneInput(N)], reason="again"))


def test_a_numbers_evidence_is_all_of_its_entries_oldest_first(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    history(actx, dispatcher, clock)
    actx.archive.write(actx.store.pending_audit(10))  # archived, not yet cleaned up: once
    got = list(evidence(actx, N))
    assert [(e["action"], e.get("source") or e.get("target")) for e in got] == [
        ("add", "api"), ("add", "voicenter"), ("add", "crm"),
    ]  # fmt: skip
    assert {e["phone"] for e in got} == {N}
    assert len({e["id"] for e in got}) == 3


def test_a_time_range_covers_every_number(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    history(actx, dispatcher, clock)
    start = actx.store.now_ms() - 60_000
    assert {e["phone"] for e in evidence(actx, since_ms=start, until_ms=start + 1)} == {N, OTHER}
    assert [e["reason"] for e in evidence(actx, since_ms=start + 1)] == ["again"]


def test_csv_has_the_common_fields_and_the_whole_entry(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    history(actx, dispatcher, clock)
    rows = list(csv.DictReader(io.StringIO("".join(as_csv(evidence(actx, N))))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["source"] or r["target"] for r in rows] == ["api", "voicenter", "crm"]
    assert json.loads(rows[2]["entry"])["reason"] == "again"


def test_the_api_streams_an_evidence_file(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    history(actx, dispatcher, clock)
    api = TestClient(create_api(lambda: actx))
    lines = api.get("/v1/audit", params={"phone": "0501234567"}, headers=AUTH)
    assert lines.status_code == 200
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(x)["phone"] for x in lines.text.splitlines()] == [N, N, N]
    table = api.get("/v1/audit", params={"since": "2020-01-01", "format": "csv"}, headers=AUTH)
    assert table.headers["content-type"].startswith("text/csv")
    assert len(table.text.splitlines()) == 1 + 5
    assert api.get("/v1/audit", headers=AUTH).status_code == 422
    assert api.get("/v1/audit?since=later", headers=AUTH).status_code == 422
    assert api.get("/v1/audit?phone=" + N).status_code == 401


def test_the_cli_writes_an_evidence_file(
    actx: Context, dispatcher: QueueDispatcher, clock: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    history(actx, dispatcher, clock)
    monkeypatch.setenv("OPTOUT_DATA_DIR", str(tmp_path / "var"))
    cli_builds(actx, monkeypatch)
    out = tmp_path / "evidence.csv"
    done = CliRunner().invoke(app, ["audit", "export", "--phone", N, "--format", "csv",
                                    "--output", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "exported 3 entries" in done.output
    assert len(out.read_text().splitlines()) == 4
    piped = CliRunner().invoke(app, ["audit", "export", "--since", "2020-01-01T00:00:00Z"])
    assert piped.exit_code == 0
    assert len([x for x in piped.stdout.splitlines() if x.startswith("{")]) == 5
    assert CliRunner().invoke(app, ["audit", "export"]).exit_code == 2


def test_an_entry_without_a_time_of_its_own_is_exported_once_and_in_range(
    actx: Context, dispatcher: QueueDispatcher, clock: Any
) -> None:
    # A batch whose numbers and entries do not pair up is kept as one row with no `at`
    # (auditlog.py: _rows): the archive times it by its id. Waiting in Redis it must stand
    # where it will stand archived, or an export that meets it on both sides (archived, not
    # yet cleaned up) gives it twice, and a time range keeps it on one side only.
    history(actx, dispatcher, clock)
    drain(actx)
    batch = actx.store.redis.xadd(actx.store.key("audit", "batches"), {"n": "a\nb", "e": "{}"})
    written_ms = int(batch.decode().split("-")[0])
    actx.archive.write(actx.store.pending_audit(10))  # archived, not yet cleaned up
    unpaired = [e for e in evidence(actx) if "unpaired" in e.get("entry", e)]
    assert len(unpaired) == 1, unpaired
    # Its id's time, inside a range and outside one, on both sides alike.
    inside = list(evidence(actx, since_ms=written_ms, until_ms=written_ms + 1))
    assert [e["id"] for e in inside] == [e["id"] for e in unpaired]
    assert not [e for e in evidence(actx, since_ms=written_ms + 1) if "unpaired" in e]
