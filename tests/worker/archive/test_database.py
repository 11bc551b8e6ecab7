"""The archive database on SQLite and PostgreSQL: migrations, idempotent writes, reads in
order, purges."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect

from worker.archive.database import (
    Archive,
    ArchiveError,
    describe,
    masked,
    sqlalchemy_url,
)
from worker.state.auditlog import PendingEntry


def entry(entry_id: str, number: str = "+972501234567", **fields: object) -> PendingEntry:
    body = {"at": int(entry_id.split("-", maxsplit=1)[0]), "act": "add", "src": "api", **fields}
    return PendingEntry(entry_id, number, json.dumps(body))


def test_postgres_urls_go_through_psycopg_and_passwords_never_show() -> None:
    assert sqlalchemy_url("postgresql://u:pw@db/optout").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("postgres://u:pw@db/optout").drivername == "postgresql+psycopg"
    assert "pw" not in masked("postgresql://u:pw@db:5432/optout")
    assert masked("postgresql://u:pw@db:5432/optout") == "postgresql+psycopg://u:***@db:5432/optout"
    assert describe("sqlite:////var/archive.sqlite3") == "SQLite /var/archive.sqlite3"


def test_migrating_twice_changes_nothing(archive: Archive) -> None:
    assert archive.migrate() == "0001"
    assert archive.migrate() == "0001"
    tables = set(inspect(archive.engine).get_table_names())
    assert {"audit_entries", "optout_archive_version"} <= tables


def test_a_batch_written_twice_is_stored_once(archive: Archive) -> None:
    batch = [entry("1796000000000-0"), entry("1796000000001-0", "+972501111111")]
    assert archive.write(batch) == 2
    assert archive.write(batch) == 0  # a drain repeated after a crash before its cleanup
    assert archive.count(None, None) == 2


def test_an_id_reused_with_another_body_is_kept_under_a_suffix(archive: Archive) -> None:
    archive.write([entry("1796000000000-0", rsn="first")])
    # A Redis that started over on a clock behind: the same id, another entry.
    assert archive.write([entry("1796000000000-0", rsn="second")]) == 1
    kept = archive.page("+972501234567", 10)
    assert sorted(e.raw["rsn"] for e in kept) == ["first", "second"]
    assert any(e.entry_id.startswith("1796000000000-0~") for e in kept)


def test_an_id_reused_for_another_number_with_the_same_body_is_kept_too(
    archive: Archive,
) -> None:
    # A chunk's answers have one body for all its numbers: after a Redis that started over,
    # the same row id may come back with the same body for another number.
    archive.write([entry("1796000000000-0.0", "+972501234567", out="done")])
    assert archive.write([entry("1796000000000-0.0", "+972501111111", out="done")]) == 1
    assert len(archive.page("+972501111111", 10)) == 1
    assert archive.write([entry("1796000000000-0.0", "+972501111111", out="done")]) == 0


def test_a_batch_of_new_repeated_and_clashing_entries_keeps_each_once(archive: Archive) -> None:
    archive.write([entry("1796000000000-0"), entry("1796000000000-1", rsn="first")])
    # The bulk path (COPY on PostgreSQL, executemany on SQLite) in one batch: a new entry, a
    # repeat, an id reused with another body; then a batch wholly new (the same session).
    mixed = [
        entry("1796000000000-0"),
        entry("1796000000000-1", rsn="second"),
        entry("1796000000000-2"),
    ]
    assert archive.write(mixed) == 2
    assert archive.write([entry(f"1796000000001-{i}") for i in range(500)]) == 500
    assert archive.count(None, None) == 504
    kept = archive.page("+972501234567", 10, before=(1796000000001, 0, ""))
    assert sorted(e.raw.get("rsn", "") for e in kept) == ["", "", "first", "second"]


def test_a_page_is_newest_first_and_continues_before_a_cursor(archive: Archive) -> None:
    n = "+972501234567"
    archive.write([entry(f"1796000000000-{i}", n) for i in range(12)]
                  + [entry("1796000000005-0", "+972509999999")])  # fmt: skip
    first = archive.page(n, 5)
    assert [e.entry_id for e in first] == [f"1796000000000-{i}" for i in (11, 10, 9, 8, 7)]
    rest = archive.page(n, 50, first[-1].key)
    assert [e.entry_id for e in rest] == [f"1796000000000-{i}" for i in range(6, -1, -1)]


def test_a_range_reads_oldest_first_across_pages(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.archive.database.PAGE", 3)
    archive.write([entry(f"17960000000{i:02d}-0", f"+97250000{i:04d}") for i in range(10)])
    got = [e.entry_id for e in archive.between(1796000000002, 1796000000009)]
    assert got == [f"17960000000{i:02d}-0" for i in range(2, 9)]
    assert [e.number for e in archive.between(None, None, "+972500000004")] == ["+972500000004"]


def test_entries_before_a_cutoff_are_deleted_in_batches(archive: Archive) -> None:
    archive.write([entry(f"17960000000{i:02d}-0") for i in range(10)])
    assert archive.delete_before(1796000000007, batch=4) == 4
    assert archive.delete_before(1796000000007, batch=4) == 3
    assert archive.delete_before(1796000000007, batch=4) == 0
    assert archive.count(None, None) == 3


def test_an_unreachable_database_is_an_archive_error_without_the_password() -> None:
    down = Archive("postgresql://optout:s3cret@127.0.0.1:1/optout")
    with pytest.raises(ArchiveError) as caught:
        down.write([entry("1796000000000-0")])
    assert "s3cret" not in caught.value.message
    assert caught.value.reason == "archive_unavailable"


def test_a_reader_finds_no_schema_without_creating_one(tmp_path: object) -> None:
    fresh = Archive(f"sqlite:///{tmp_path}/new.sqlite3")
    assert fresh.ready() is False
    assert fresh.ready() is False


def test_rows_of_the_two_streams_that_share_a_time_and_an_order_are_each_read_across_pages(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `audit:log` and `audit:batches` number their ids each on its own: in one ms, a
    # provider's entry (or an older process's, during a rolling upgrade) `{ms}-0` and a
    # batch's first row `{ms}-0.0` have the same time and the same seq.
    n, ms = "+972501234567", 1796000000000
    archive.write([entry(f"{ms}-0", ""), entry(f"{ms}-0.0"), entry(f"{ms}-1.0", "+972509999999")])
    archive.write([entry(f"{ms + 1}-0", n), entry(f"{ms + 1}-0.0")])
    monkeypatch.setattr("worker.archive.database.PAGE", 1)
    got = [e.entry_id for e in archive.between(None, None)]
    assert sorted(got) == sorted([f"{ms}-0", f"{ms}-0.0", f"{ms}-1.0", f"{ms + 1}-0",
                                  f"{ms + 1}-0.0"])  # fmt: skip
    assert len(got) == len(set(got))
    # A number's pages, one entry each: every entry once, newest first.
    seen, before = [], None
    while page := archive.page(n, 1, before):
        seen += [e.entry_id for e in page]
        before = page[-1].key
    assert sorted(seen) == sorted([f"{ms}-0.0", f"{ms + 1}-0", f"{ms + 1}-0.0"])
    assert len(seen) == len(set(seen))
