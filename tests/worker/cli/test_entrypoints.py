"""Entry points a running deployment may still name across an upgrade: `python -m worker.cli`
(what supervisors respawn children with) and the `worker.asgi:create` factory."""

from __future__ import annotations

import importlib
import subprocess
import sys


def test_python_dash_m_worker_cli_still_runs_the_cli() -> None:
    # A supervisor started before an upgrade respawns a crashed child with this argv.
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "--help"], check=False, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()


def test_the_documented_asgi_factory_still_imports() -> None:
    module = importlib.import_module("worker.asgi")
    assert callable(module.create)
