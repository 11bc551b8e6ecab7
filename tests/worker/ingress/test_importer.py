"""CSV import in-process: every row accounted for, the report in file order."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.fakes.dispatch import QueueDispatcher
from worker.ingress import importer
from worker.ingress.importer import import_csv, scrub_csv
from worker.pipeline.accept import StoreUnavailableError
from worker.pipeline.context import Context
from worker.providers.base import Action


def _write(path: Path, phones: list[str]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["phone"])
        out.writerows([p] for p in phones)


def test_every_row_is_accepted_or_reported_in_file_order(
    ctx: Context, dispatcher: QueueDispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BATCH", 100)
    phones = [f"+97250{i:07d}" for i in range(450)]
    phones[10] = "not a phone"
    phones[250] = "12"
    phones[300:400] = ["x"] * 100  # a whole batch with no valid phone
    source, report_path = tmp_path / "in.csv", tmp_path / "report.csv"
    _write(source, phones)
    seen: list[int] = []
    report = import_csv(
        ctx, source, action=Action.ADD, source="crm", as_of=None,
        report_path=report_path, progress=seen.append,
    )  # fmt: skip
    assert (report.rows, report.accepted, report.rejected) == (450, 348, 102)
    with report_path.open() as f:
        lines = [int(row["line"]) for row in csv.DictReader(f)]
    assert lines == [12, 252, *range(302, 402)]  # file lines, header first
    assert seen == sorted(seen) and len(seen) == 5
    assert ctx.store.ledger("+972500000449")["s"] == "blocked"
    assert "s" not in ctx.store.ledger("+972500000350")


def test_a_redis_failure_stops_the_import(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    monkeypatch.setattr(importer, "BATCH", 100)
    source = tmp_path / "in.csv"
    _write(source, [f"+97250{i:07d}" for i in range(500)])
    calls = 0
    real = ctx.store.accept

    def failing(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise redis.ConnectionError("gone")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ctx.store, "accept", failing)
    with pytest.raises(StoreUnavailableError):
        import_csv(ctx, source, action=Action.ADD, source="crm", as_of=None,
                   report_path=tmp_path / "r.csv")  # fmt: skip
    assert calls == 3  # nothing after the failed batch


def _rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_import_and_scrub_read_the_same_column_and_refuse_a_missing_one(
    ctx: Context, dispatcher: QueueDispatcher, tmp_path: Path
) -> None:
    listed = _rows(tmp_path / "crm.csv", [["name", "mobile"], ["Dana", "0501234567"]])
    import_csv(ctx, listed, action=Action.ADD, source="crm", as_of=None,
               report_path=tmp_path / "r.csv", column="mobile")  # fmt: skip
    assert ctx.store.ledger("+972501234567")["s"] == "blocked"
    dial = _rows(
        tmp_path / "dial.csv", [["id", "Mobile"], ["1", "0501234567"], ["2", "0521234567"]]
    )
    report = scrub_csv(ctx, dial, tmp_path / "out.csv", column="mobile")
    assert (report.rows, report.dialable, report.blocked) == (2, 1, 1)
    assert (tmp_path / "out.csv").read_text().splitlines() == ["id,Mobile", "2,0521234567"]
    with pytest.raises(ValueError, match="no column named 'phone_number'"):
        scrub_csv(ctx, dial, tmp_path / "out.csv", column="phone_number")
    with pytest.raises(ValueError, match="no column named 'phone_number'"):
        import_csv(ctx, dial, action=Action.ADD, source="crm", as_of=None,
                   report_path=tmp_path / "r.csv", column="phone_number")  # fmt: skip


def test_a_file_without_a_header_is_read_from_its_first_column(
    ctx: Context, dispatcher: QueueDispatcher, tmp_path: Path
) -> None:
    bare = _rows(tmp_path / "bare.csv", [["0501234567", "x"], ["0521234567", "y"]])
    report = import_csv(ctx, bare, action=Action.ADD, source="crm", as_of=None,
                        report_path=tmp_path / "r.csv")  # fmt: skip
    assert (report.rows, report.accepted) == (2, 2)
    scrubbed = scrub_csv(ctx, bare, tmp_path / "out.csv")
    assert (scrubbed.rows, scrubbed.blocked, scrubbed.dialable) == (2, 2, 0)


def test_a_semicolon_list_with_a_spelled_out_header_is_read(
    ctx: Context, dispatcher: QueueDispatcher, tmp_path: Path
) -> None:
    listed = tmp_path / "crm.csv"
    listed.write_text("Phone Number;Name\n0501234567;Dana\n0521234567;Avi\n")
    report = import_csv(ctx, listed, action=Action.ADD, source="crm", as_of=None,
                        report_path=tmp_path / "crm.rejected.csv")  # fmt: skip
    assert (report.rows, report.accepted, report.rejected) == (2, 2, 0)
    assert not report.report_written and not (tmp_path / "crm.rejected.csv").exists()
    dial = tmp_path / "dial.csv"
    dial.write_text("Mobile;Name\n0501234567;Dana\n0531234567;Noa\n")
    scrubbed = scrub_csv(ctx, dial, tmp_path / "out.csv")
    assert (scrubbed.blocked, scrubbed.dialable) == (1, 1)
    assert (tmp_path / "out.csv").read_text() == "Mobile;Name\n0531234567;Noa\n"


def test_repeated_numbers_are_counted_as_duplicates_not_accepted(
    ctx: Context, dispatcher: QueueDispatcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BATCH", 2)  # repeats across batches too
    listed = _rows(
        tmp_path / "crm.csv",
        [["phone"], ["0501234567"], ["+972501234567"], ["972501234567"], ["0521234567"],
         ["0521234567"], ["x"], ["0531234567"]],
    )  # fmt: skip
    report = import_csv(ctx, listed, action=Action.ADD, source="crm", as_of=None,
                        report_path=tmp_path / "r.csv")  # fmt: skip
    assert (report.rows, report.accepted, report.duplicates, report.rejected) == (7, 3, 3, 1)
    assert report.report_written
    with (tmp_path / "r.csv").open() as f:
        assert [row["reason"] for row in csv.DictReader(f)] == ["contains_letters"]


def test_a_report_left_by_an_earlier_run_goes_when_nothing_is_rejected(
    ctx: Context, dispatcher: QueueDispatcher, tmp_path: Path
) -> None:
    stale = tmp_path / "r.csv"
    stale.write_text("line,input,reason\n2,x,contains_letters\n")
    listed = _rows(tmp_path / "crm.csv", [["phone"], ["0501234567"]])
    report = import_csv(ctx, listed, action=Action.ADD, source="crm", as_of=None,
                        report_path=stale)  # fmt: skip
    assert report.accepted == 1 and not stale.exists()
