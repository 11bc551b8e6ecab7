"""A real PostgreSQL for the archive's tests: a database of the test's own on the server at
OPTOUT_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres, trust auth),
created and dropped by the test; None when no server answers there (the test skips)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

ADMIN_URL = os.environ.get("OPTOUT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _connect(url: str) -> object | None:
    try:
        import psycopg

        return psycopg.connect(url, autocommit=True, connect_timeout=2)
    except Exception:  # noqa: BLE001
        return None  # not there: the caller skips


def unreachable_reason() -> str | None:
    conn = _connect(ADMIN_URL)
    if conn is None:
        return f"no PostgreSQL answers at {ADMIN_URL} (set OPTOUT_TEST_PG_URL)"
    conn.close()  # type: ignore[attr-defined]
    return None


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new database's URL for the duration; dropped after, however the test ended."""
    name = f"optout_test_{uuid.uuid4().hex[:12]}"
    admin = _connect(ADMIN_URL)
    assert admin is not None
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]
