"""The archive under test: SQLite always, and a PostgreSQL database of the test's own when a
server answers (tests/real_postgres.py); a pipeline whose archive it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_postgres import scratch_database, unreachable_reason
from worker.archive.database import Archive
from worker.pipeline.context import Context


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archive.sqlite3'}"
        return
    reason = unreachable_reason()
    if reason:
        pytest.skip(reason)
    with scratch_database() as url:
        yield url


@pytest.fixture
def archive(archive_url: str) -> Iterator[Archive]:
    db = Archive(archive_url)
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def actx(make_ctx: Any, archive: Archive) -> Context:
    """A pipeline (fakeredis, fake clock, fake Voicenter) whose archive is `archive`."""
    ctx: Context = make_ctx(admin_token="admin")
    ctx.archive = archive
    return ctx
