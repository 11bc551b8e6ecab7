"""`optout api --workers N`: several server processes, one view of metrics, masked logs."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import wait_for
from tests.processes import CLI, Processes
from worker.runtime.embedded import free_port

pytestmark = pytest.mark.integration


def test_two_server_processes_count_together_and_log_json(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    procs = Processes(env, tmp_path)
    api = procs.start("api", *CLI, "api", "--port", str(port), "--workers", "2")
    log = procs.log("api")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer admin-secret"}
    try:

        def up() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the API never answered")
        total = 40
        for i in range(total):
            # A new connection each time: the kernel spreads them over both processes.
            r = httpx.post(url + "/v1/optouts", headers=auth, timeout=10,
                           json={"action": "add", "phones": [f"+97258{i:07d}"]})  # fmt: skip
            assert r.status_code == 202, r.text
        children = subprocess.run(
            ["pgrep", "-P", str(api.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) >= 2, "uvicorn did not start two server processes"
        # uvicorn's own warning from a server process: a line of ours, not its plain text.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
            bad.sendall(b"NOT HTTP +972581234567\r\n\r\n")
            assert bad.recv(100).startswith(b"HTTP/1.1 400")

        metrics = httpx.get(url + "/metrics", timeout=10).text
        line = next(
            line for line in metrics.splitlines()
            if line.startswith("optout_events_total{") and 'outcome="accepted"' in line
        )  # fmt: skip
        assert float(line.rsplit(" ", 1)[1]) == total, line
    finally:
        procs.stop()

    lines = [json.loads(x) for x in log.read_text().splitlines()]  # every line JSON
    assert any(x["logger"] == "uvicorn.error" for x in lines)
    http = [x for x in lines if x.get("event") == "http" and x["path"] == "/v1/optouts"]
    assert len(http) == total
    audit = [n for x in lines if x.get("event") == "audit" for n in x["numbers"]]
    assert len(audit) == total and all("***" in n["phone"] for n in audit)
    assert "+97258" not in log.read_text().replace("+97258***", "")
