"""The archive database: its engine (PostgreSQL through psycopg, or SQLite), migrations, and
the statements that write, read and purge audit entries."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import Engine, Select, and_, create_engine, delete, event, inspect, or_, select
from sqlalchemy import text as sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from worker.archive.schema import VERSION_TABLE, audit_entries
from worker.domain.errors import OptoutError
from worker.state.auditlog import PendingEntry, seq_of, time_of

log = structlog.get_logger("optout.archive")

#: Rows per statement when the archive is read page by page (an export, a purge).
PAGE = 5000
#: PostgreSQL advisory lock key: one process migrates at a time (the others wait, then
#: find the schema current).
_MIGRATION_LOCK = 0x6F70746F  # "opto"


class ArchiveError(OptoutError, reason="archive_unavailable"):
    """The archive database could not be reached, or refused a statement."""


def sqlalchemy_url(url: str) -> URL:
    """OPTOUT_ARCHIVE_URL as SQLAlchemy takes it: postgresql:// (or postgres://) through
    psycopg 3; sqlite:///path as it is."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def masked(url: str) -> str:
    """The URL as logs and check-config show it: the password, if any, as ***."""
    try:
        return sqlalchemy_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "(unparseable URL)"  # never echo what could not be parsed: it may be a secret


def describe(url: str) -> str:
    """What the archive is, for a person: 'PostgreSQL postgresql+psycopg://u:***@h/db' or
    'SQLite /path/archive.sqlite3'."""
    parsed = sqlalchemy_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database or '(in memory)'}"
    return f"PostgreSQL {masked(url)}"


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    cursor = connection.cursor()
    # WAL: readers (the API, exports) never block the archiver's writes. FULL: a commit is on
    # disk before the archiver drops the entries from Redis, power loss or not.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create(url: str) -> Engine:
    """An engine for the archive URL; connects on first use. A PostgreSQL that is down fails
    a statement within seconds (the entries wait in Redis), not after a TCP timeout."""
    parsed = sqlalchemy_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        if memory:
            # One connection for the whole process: each would be a database of its own.
            engine = create_engine(parsed, poolclass=StaticPool,
                                   connect_args={"check_same_thread": False})  # fmt: skip
        else:
            Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"check_same_thread": False,
                                                         "timeout": 30})  # fmt: skip
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        parsed, pool_pre_ping=True, pool_size=2, max_overflow=4, pool_recycle=1800,
        connect_args={"connect_timeout": 3},
    )  # fmt: skip


#: Where an entry stands in the order entries are shown in: (at, seq, entry id).
Key = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    """An audit entry as the archive (or Redis) holds it: id, number ('' for a provider's),
    time (ms), write order, and the entry's fields as the scripts wrote them."""

    entry_id: str
    number: str
    at: int
    seq: int
    raw: dict[str, Any]

    @property
    def key(self) -> Key:
        """The order entries are shown in: by time, then as written, then by id. The id
        breaks ties: `audit:log` and `audit:batches` number their ids each on its own, so a
        stream entry `{ms}-0` and a batch's row `{ms}-0.0` of the same ms have the same seq
        (and an id kept under a suffix has its first's); a page that ended on one of them
        must not skip the other."""
        return (self.at, self.seq, self.entry_id)


#: The archive's columns in the order `_row` gives them.
_COLUMNS = ("entry_id", "number", "at", "seq", "action", "source", "event_id", "target", "body")
_BODY = _COLUMNS.index("body")
_NUMBER = _COLUMNS.index("number")
_NAMES = ", ".join(_COLUMNS)
# Statements built from the schema's own names, never from input.
_INSERT = (
    f"INSERT INTO {audit_entries.name} ({_NAMES}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (entry_id) DO NOTHING"
)
_INCOMING = f"incoming_{audit_entries.name}"
_FROM_INCOMING = (
    f"INSERT INTO {audit_entries.name} ({_NAMES}) SELECT {_NAMES} FROM {_INCOMING} "  # noqa: S608
    "ON CONFLICT (entry_id) DO NOTHING"
)


def _row(entry: PendingEntry) -> tuple[Any, ...]:
    try:
        raw = orjson.loads(entry.body)
    except orjson.JSONDecodeError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    seq = seq_of(entry.entry_id)
    return (
        entry.entry_id,
        entry.number,
        time_of(raw, seq),
        seq,
        str(raw.get("act") or "")[:32],
        str(raw.get("src") or "")[:100],
        str(raw.get("ev") or "")[:100],
        str(raw.get("prov") or "")[:100],
        entry.body,
    )


def _insert_rows(connection: Any, rows: list[tuple[Any, ...]]) -> int:
    """Rows through the driver's executemany, a taken id skipped; how many were new."""
    qmark = connection.dialect.paramstyle == "qmark"
    statement = _INSERT if qmark else _INSERT.replace("?", "%s")
    result = connection.exec_driver_sql(statement, rows)
    return max(0, int(result.rowcount))


def _copy_rows(connection: Any, rows: list[tuple[Any, ...]]) -> int:
    """PostgreSQL: rows by COPY into a temporary table, then on into the archive, a taken id
    skipped (COPY alone cannot skip); how many were new."""
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING} "
        f"(LIKE {audit_entries.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    with (
        connection.connection.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {_INCOMING} ({_NAMES}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    result = connection.exec_driver_sql(_FROM_INCOMING)
    return max(0, int(result.rowcount))


def _entry(row: Any) -> ArchivedEntry:
    try:
        raw = orjson.loads(row.body)
    except orjson.JSONDecodeError:
        raw = {"unreadable": row.body}
    return ArchivedEntry(row.entry_id, row.number, int(row.at), int(row.seq), raw)


class Archive:
    """The archive database for one URL; the engine is made on first use (after a fork:
    each process its own). Migrations run once per process before the first write
    (`ensure_schema`), or explicitly (`optout archive migrate`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._migrated = False
        self._ready = False
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = create(self.url)
        return self._engine

    @property
    def dialect(self) -> str:
        return sqlalchemy_url(self.url).get_backend_name()

    def describe(self) -> str:
        return describe(self.url)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._migrated = self._ready = False

    def migrate(self) -> str:
        """Bring the schema to the newest version (Alembic); the version it is at."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        config = Config()
        config.set_main_option("script_location", "worker.archive:migrations")
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(sql("SELECT pg_advisory_xact_lock(:k)"),
                                       {"k": _MIGRATION_LOCK})  # fmt: skip
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                context = MigrationContext.configure(
                    connection, opts={"version_table": VERSION_TABLE}
                )
                version = context.get_current_revision() or "none"
        except SQLAlchemyError as exc:
            raise ArchiveError(f"archive unavailable: {_reason(exc)}") from exc
        self._migrated = True
        return version

    def ensure_schema(self) -> None:
        """Migrate, once per process (the archiver's first write)."""
        if not self._migrated:
            self.migrate()

    def ready(self) -> bool:
        """Whether the schema is there (a reader never migrates: it may lack the rights)."""
        if self._migrated or self._ready:
            return True
        try:
            # Once there, always there: asked once per process, not on every read.
            self._ready = inspect(self.engine).has_table(audit_entries.name)
        except SQLAlchemyError as exc:
            raise ArchiveError(f"archive unavailable: {_reason(exc)}") from exc
        return self._ready

    def write(self, entries: Sequence[PendingEntry]) -> int:
        """Insert entries in one transaction; an entry already there (a drain repeated after
        a crash between commit and cleanup) is skipped. How many rows are new. An id already
        there with another body (a Redis that started over, on a clock behind the one
        before) is kept as well, under its id with a suffix, and logged: evidence is never
        dropped."""
        if not entries:
            return 0
        rows = [_row(e) for e in entries]
        try:
            with self.engine.begin() as connection:
                # The driver's own bulk path, not a compiled statement per row: the drain
                # runs in the workers' processes, beside the pushes.
                if self.dialect == "postgresql":
                    new = _copy_rows(connection, rows)
                else:
                    new = _insert_rows(connection, rows)
                if new < len(rows):
                    clashes = self._clashes(connection, rows)
                    if clashes:
                        new += _insert_rows(connection, clashes)
        except SQLAlchemyError as exc:
            raise ArchiveError(f"archive unavailable: {_reason(exc)}") from exc
        return new

    def _clashes(self, connection: Any, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Of rows whose id is taken, those of another number or body, under a suffixed id
        (rows this transaction inserted hold their own: never a clash). The number counts:
        a chunk's answers have one body for all of its numbers."""
        table = audit_entries
        held: dict[str, tuple[str, str]] = {}
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), 1000):
            found = connection.execute(
                select(table.c.entry_id, table.c.number, table.c.body).where(
                    table.c.entry_id.in_(ids[start : start + 1000])
                )
            )
            held.update({r.entry_id: (r.number, r.body) for r in found})
        out = []
        for row in rows:
            number, body = row[_NUMBER], row[_BODY]
            if held.get(row[0]) == (number, body):
                continue
            digest = hashlib.sha256(f"{number}\n{body}".encode()).hexdigest()[:12]
            log.error("audit_entry_id_reused", entry_id=row[0], kept_as_suffix=digest)
            out.append((f"{row[0]}~{digest}", *row[1:]))
        return out

    def page(self, number: str, limit: int, before: Key | None = None) -> list[ArchivedEntry]:
        """A number's newest `limit` entries older than `before` (a key), newest first."""
        table = audit_entries
        entry_id = self._ordered_id()
        query = select(table).where(table.c.number == number)
        if before is not None:
            at, seq, last = before
            query = query.where(or_(
                table.c.at < at,
                and_(table.c.at == at, or_(table.c.seq < seq,
                                           and_(table.c.seq == seq, entry_id < last))),
            ))  # fmt: skip
        query = query.order_by(table.c.at.desc(), table.c.seq.desc(), entry_id.desc())
        return self._read(query.limit(limit))

    def between(
        self, since_ms: int | None, until_ms: int | None, number: str | None = None
    ) -> Iterator[ArchivedEntry]:
        """Entries at or after `since_ms` and before `until_ms` (of a number), oldest first,
        read a page at a time (a five-year export never sits in memory)."""
        table = audit_entries
        entry_id = self._ordered_id()
        after: Key | None = None
        while True:
            query = _within(select(table), since_ms, until_ms, number)
            if after is not None:
                at, seq, last = after
                query = query.where(or_(
                    table.c.at > at,
                    and_(table.c.at == at, or_(table.c.seq > seq,
                                               and_(table.c.seq == seq, entry_id > last))),
                ))  # fmt: skip
            rows = self._read(query.order_by(table.c.at, table.c.seq, entry_id).limit(PAGE))
            yield from rows
            if len(rows) < PAGE:
                return
            after = rows[-1].key

    def count(self, since_ms: int | None, until_ms: int | None, number: str | None = None) -> int:
        from sqlalchemy import func

        table = audit_entries
        query = _within(select(func.count()).select_from(table), since_ms, until_ms, number)
        try:
            with self.engine.connect() as connection:
                return int(connection.execute(query).scalar_one())
        except SQLAlchemyError as exc:
            raise ArchiveError(f"archive unavailable: {_reason(exc)}") from exc

    def delete_before(self, cutoff_ms: int, batch: int = 10_000) -> int:
        """Delete up to `batch` of the entries older than `cutoff_ms`, oldest first, in one
        short transaction; how many went."""
        table = audit_entries
        chosen = select(table.c.entry_id).where(table.c.at < cutoff_ms)
        chosen = chosen.order_by(table.c.at).limit(batch)
        try:
            with self.engine.begin() as connection:
                ids = [r[0] for r in connection.execute(chosen)]
                if ids:
                    connection.execute(delete(table).where(table.c.entry_id.in_(ids)))
        except SQLAlchemyError as exc:
            raise ArchiveError(f"archive unavailable: {_reason(exc)}") from exc
        return len(ids)

    def _ordered_id(self) -> Any:
        """The entry id as the order compares it: by its characters' codes, as Python
        compares the ids of the entries still in Redis that a read merges with these
        (PostgreSQL's default collation may not; SQLite's is already so)."""
        if self.dialect == "postgresql":
            return audit_entries.c.entry_id.collate("C")
        return audit_entries.c.entry_id

    def _read(self, query: Any) -> list[ArchivedEntry]:
        try:
            with self.engine.connect() as connection:
                return [_entry(r) for r in connection.execute(query)]
        except SQLAlchemyError as exc:
            raise ArchiveError(f"archive unavailable: {_reason(exc)}") from exc


def _within(query: Select[Any], since_ms: int | None, until_ms: int | None,
            number: str | None) -> Select[Any]:  # fmt: skip
    """The query narrowed to a number's entries and to [since, until) when given."""
    table = audit_entries
    if number is not None:
        query = query.where(table.c.number == number)
    if since_ms is not None:
        query = query.where(table.c.at >= since_ms)
    if until_ms is not None:
        query = query.where(table.c.at < until_ms)
    return query


def _reason(exc: SQLAlchemyError) -> str:
    """Why a statement failed, in one line and without the URL (it may hold a password)."""
    original = getattr(exc, "orig", None)
    first = str(original or exc).strip().splitlines()
    return f"{type(original or exc).__name__}: {first[0] if first else ''}"[:200]
