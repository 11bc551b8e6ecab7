"""The archive's tables, as SQLAlchemy Core sees them (migrations/ creates and changes them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text

metadata = MetaData()

#: Alembic's version table: named for us, as the archive may share a database with others.
VERSION_TABLE = "optout_archive_version"

#: One row per audit entry, written once and never updated (purged at the end of retention).
audit_entries = Table(
    "audit_entries",
    metadata,
    # The entry's id in Redis's audit stream (`{ms}-{n}`): what makes a repeated insert a
    # no-op, and what a read merges the Redis tail by.
    Column("entry_id", String(64), primary_key=True),
    Column("number", String(32), nullable=False),  # E.164; '' for a provider's entry
    Column("at", BigInteger, nullable=False),  # ms since the epoch (the entry's own `at`)
    # The stream id as one integer (ms * 1,000,000 + n): the order entries were written in,
    # which breaks ties between entries of the same ms.
    Column("seq", BigInteger, nullable=False),
    Column("action", String(32), nullable=False),
    Column("source", String(100), nullable=False),
    Column("event_id", String(100), nullable=False),
    Column("target", String(100), nullable=False),
    Column("body", Text, nullable=False),  # the entry's JSON as the script wrote it
)

Index("audit_entries_number_at", audit_entries.c.number, audit_entries.c.at.desc(),
      audit_entries.c.seq.desc())  # fmt: skip
Index("audit_entries_at", audit_entries.c.at, audit_entries.c.seq)
