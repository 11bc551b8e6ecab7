"""Ops commands against a real Redis, output asserted: import, scrub, status, dlq, provider
list, reconcile, sla."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from config import load_settings
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.phonely import FakePhonely
from tests.fakes.providers import env_for
from tests.fakes.server import LoopbackServer
from tests.fakes.voicenter import FakeVoicenter
from worker.cli.main import app
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime import wiring

pytestmark = pytest.mark.integration
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    monkeypatch.setattr(wiring, "_context", None)
    monkeypatch.setattr(wiring, "_settings", None)
    yield env


def run(*args: str) -> Any:
    wiring.reset()
    result = runner.invoke(app, list(args))
    return result


def local(env: dict[str, str]) -> Context:
    """An in-process pipeline on the same Redis, pushing synchronously (no worker needed)."""
    return wiring.build_context(load_settings(env), dispatcher=QueueDispatcher())


def drain(ctx: Context) -> None:
    assert isinstance(ctx.dispatcher, QueueDispatcher)
    for _ in range(3):
        for target in ctx.targets():
            for action in Action:
                work.flush(ctx, target, action, work.ALL)
        ctx.dispatcher.drain(ctx)


def test_import_100k_rows_with_bad_ones_twice(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    bad = {17: "not-a-number", 50_000: "12", 99_998: "0501234567abc"}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "phone"])
        for i in range(100_000):
            phone = bad.get(i, f"+97253{i:07d}" if i % 2 else f"97253{i:07d}.0")
            writer.writerow([f"customer {i}", phone])
    result = run("import", str(path), "--source", "crm")
    assert result.exit_code == 0, result.output
    assert "rows 100000: accepted 99997, duplicates 0, rejected 3" in result.output
    report = list(csv.reader((tmp_path / "crm.rejected.csv").open()))
    assert report[0] == ["line", "input", "reason"]
    assert sorted((r[1], r[2]) for r in report[1:]) == sorted(
        [("not-a-number", "contains_letters"), ("12", "too_short"),
         ("0501234567abc", "contains_letters")]
    )  # fmt: skip
    assert {int(r[0]) for r in report[1:]} == {i + 2 for i in bad}  # header is line 1

    again = run("import", str(path), "--source", "crm")
    assert again.exit_code == 0, again.output
    assert "already imported batches 100" in again.output
    status = run("status", "+972530000001", "--json")
    view = json.loads(status.output)
    assert view["state"] == "blocked" and view["version"] == 1
    assert view["audit"][0]["source"] == "crm"

    assert run("import", str(path), "--action", "remove").exit_code == 2  # needs --as-of
    older = run("import", str(path), "--action", "remove", "--as-of", "2020-01-01T00:00:00Z")
    assert older.exit_code == 0, older.output
    assert json.loads(run("status", "+972530000001", "--json").output)["state"] == "blocked"


def test_scrub_writes_the_dialable_rows(cli_env: dict[str, str], tmp_path: Path) -> None:
    ctx = local(cli_env)
    accept(
        ctx, Event("api", Action.ADD, [PhoneInput("+972501111111"), PhoneInput("+972501111113")])
    )
    path = tmp_path / "campaign.csv"
    path.write_text("phone,first\n0501111111,a\n0501111112,b\n0501111113,c\nnope,d\n")
    result = run("scrub", str(path))
    assert result.exit_code == 0, result.output
    assert "rows 4: dialable 1" in result.output
    assert "blocked 2" in result.output
    out = (tmp_path / "campaign.dialable.csv").read_text().splitlines()
    assert out == ["phone,first", "0501111112,b"]


def test_dlq_list_show_replay_purge_and_provider_list(
    cli_env: dict[str, str], fake_voicenter_server: tuple[FakeVoicenter, str]
) -> None:
    fake = fake_voicenter_server[0]
    ctx = local(cli_env)
    fake.permanent |= {"972501111111", "972501111112"}
    phones = ("+972501111111", "+972501111112", "+972501111113")
    accept(ctx, Event("api", Action.ADD, [PhoneInput(p) for p in phones]))
    drain(ctx)
    listed = run("dlq", "list", "--json")
    ids = [json.loads(line)["id"] for line in listed.output.splitlines()]
    assert ids == ["voicenter:+972501111111", "voicenter:+972501111112"]
    shown = run("dlq", "show", "voicenter:+972501111111", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["dead_letter"]["reason"] == "bad_format"
    assert run("dlq", "show", "voicenter:+972500000000").exit_code == 1
    providers = run("provider", "list")
    assert "voicenter" in providers.output and "dead letters: 2" in providers.output

    fake.permanent.clear()
    dry = run("dlq", "replay", "--id", "voicenter:+972501111111", "--dry-run")
    assert "would replay 1" in dry.output
    replayed = run("dlq", "replay", "--id", "voicenter:0501111111")  # national
    assert "replayed 1" in replayed.output
    assert "replayed 1" in run("dlq", "replay", "--id", "voicenter|+972501111111").output
    drain(ctx)
    assert fake.numbers_sent().count("972501111111") == 2  # the failure, then one replay
    assert [json.loads(x)["id"] for x in run("dlq", "list", "--json").output.splitlines()] == [
        "voicenter:+972501111112"
    ]
    purged = run("dlq", "purge", "--all")
    assert "purged 1" in purged.output
    assert run("dlq", "list", "--json").output == ""
    status = run("status", "+972501111112", "--json")
    assert json.loads(status.output)["audit"][0]["action"] == "purge"


def test_reconcile_repushes_missing_and_reports_extras(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePhonely()
    with LoopbackServer(fake.handle) as server:
        env = {**cli_env, **env_for("phonely", server.url)}
        env.pop("VOICENTER_API_CODE")
        monkeypatch.delenv("VOICENTER_API_CODE")
        for key, val in env.items():
            monkeypatch.setenv(key, val)
        ctx = local(env)
        accept(
            ctx,
            Event("api", Action.ADD, [PhoneInput("+972501111111"), PhoneInput("+972501111112")]),
        )
        drain(ctx)
        fake.listed("agent-a").discard("972501111112")  # lost at Phonely: missing
        fake.listed("agent-b").add("972509999999")  # put there by hand: extra
        result = run("reconcile", "phonely")
        assert result.exit_code == 0, result.output
        assert "extra at phonely:agent-b: +972509999999" in result.output
        view = ctx.store.provider_view("+972501111112", ["phonely:agent-a", "phonely:agent-b"])
        assert view["phonely:agent-a"]["staged"] == "add"
        assert view["phonely:agent-b"]["staged"] is None
        drain(ctx)
        assert "972501111112" in fake.listed("agent-a")
        assert "972509999999" in fake.listed("agent-b")  # reported, not removed
        removed = run("reconcile", "phonely", "--remove-extras")
        assert removed.exit_code == 0, removed.output
        # Staged for removal through the pipeline (versioned like any change): the workers
        # take it off.
        assert "972509999999" in fake.listed("agent-b")
        drain(ctx)
        assert "972509999999" not in fake.listed("agent-b")
        assert ctx.store.ledger("+972509999999")["e"] == "reconcile"


def test_sla_lists_numbers_not_yet_confirmed(cli_env: dict[str, str]) -> None:
    ctx = local(cli_env)
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972501111111")]))  # staged, never pushed
    late = run("sla", "--age", "0s")
    assert late.exit_code == 1
    assert "+972501111111" in late.output and "voicenter" in late.output
    assert run("sla").exit_code == 0  # nothing older than 24 h
    assert run("sla", "--age", "soon").exit_code == 2


def test_an_import_in_its_own_process_shows_in_the_apis_metrics(
    env: dict[str, str], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from tests.processes import CLI, ROOT
    from tests.worker.runtime.test_observability import samples, value
    from worker.ingress.api import create_api

    ctx = local(env)
    api = TestClient(create_api(lambda: ctx))
    before = samples(api.get("/metrics").text)
    path = tmp_path / "list.csv"
    path.write_text("phone\n" + "".join(f"+97254{i:07d}\n" for i in range(1500)) + "12\nabc\n")
    child_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [*CLI, "import", str(path), "--source", "crm-list"],
        env={**child_env, **env, "COLUMNS": "80"}, cwd=ROOT, capture_output=True, text=True,
        check=False,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rows 1502: accepted 1500, duplicates 0, rejected 2" in done.stdout
    assert "{" not in done.stdout + done.stderr  # the log lines are in the data dir's file
    assert '"event":"audit"' in (Path(env["OPTOUT_DATA_DIR"]) / "logs" / "cli.log").read_text()
    after = samples(api.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("optout_events_total", source="crm-list", outcome="accepted") == 2  # batches
    assert delta("optout_numbers_accepted_total", source="crm-list") == 1500
    assert delta("optout_numbers_rejected_total", source="crm-list", reason="too_short") == 1
    assert delta("optout_numbers_rejected_total", source="crm-list", reason="contains_letters") == 1
