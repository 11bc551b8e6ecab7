"""`optout provider` and `reconcile` in a terminal without the providers' credentials: they
see the deployment's targets in Redis, and say what needs credentials this process lacks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from tests.worker.cli.conftest import cli_builds
from tests.worker.providers.test_all_providers import World
from worker.cli.main import app
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime import wiring

runner = CliRunner()
PHONELY = {"provider": "phonely", "add_only": False, "max_batch": 100}


def announce(ctx: Context, target: str, meta: dict[str, object], ttl: float = 600.0) -> None:
    """Another process (one with that provider's credentials) announcing a target."""
    ctx.store.register_targets({target: meta}, ttl)


def rows(stdout: str) -> list[dict[str, str]]:
    header, *lines = stdout.splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def test_provider_list_shows_the_deployments_targets_live_or_not(
    bare_cli: Context, ctx: Context, clock: FakeClock
) -> None:
    announce(ctx, "phonely:agent-a", PHONELY, ttl=1)
    clock.advance(5)  # the process that had Phonely has gone
    ctx.ensure_registered(force=True)  # the Voicenter worker runs on
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))

    result = runner.invoke(app, ["provider", "list"])

    assert result.exit_code == 0, result.output
    listed = {r["target"]: r for r in rows(result.stdout)}
    assert set(listed) == {"voicenter", "phonely:agent-a"}
    assert listed["voicenter"]["provider"] == "voicenter"
    assert listed["voicenter"]["live"] == "yes"
    assert listed["voicenter"]["staged_add"] == "1"
    assert listed["voicenter"]["credentials_here"] == "no"
    assert listed["phonely:agent-a"]["live"] == "no"
    assert "not live (no running process announces it" in result.stderr
    assert "phonely:agent-a" in result.stderr
    assert "no credentials here for voicenter (set VOICENTER_API_CODE)" in result.stderr
    assert "PHONELY_API_KEY, PHONELY_UID, PHONELY_AGENT_IDS" in result.stderr

    as_json = runner.invoke(app, ["provider", "list", "--json"])
    records = {r["target"]: r for r in map(json.loads, as_json.stdout.splitlines())}
    assert records["voicenter"]["live"] is True
    assert records["voicenter"]["credentials_here"] is False
    assert records["phonely:agent-a"]["live"] is False
    assert as_json.stderr == ""


def test_provider_list_shows_a_pause_the_workers_hit(
    bare_cli: Context, ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    fake_voicenter.key = "rotated"
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))
    dispatcher.drain(ctx)

    result = runner.invoke(app, ["provider", "list"])

    [row] = rows(result.stdout)
    assert row["state"].startswith("paused: ")
    assert "fix VOICENTER_API_CODE" in result.stderr


def test_provider_test_without_credentials_here_names_the_variables(
    bare_cli: Context, ctx: Context, fake_voicenter: FakeVoicenter
) -> None:
    announce(ctx, "phonely:agent-a", PHONELY)

    voicenter = runner.invoke(app, ["provider", "test", "voicenter"])
    phonely = runner.invoke(app, ["provider", "test", "phonely"])

    assert voicenter.exit_code == 2
    assert "voicenter is on in the deployment, but this process has no credentials" in (
        voicenter.stderr
    )
    assert "set VOICENTER_API_CODE" in voicenter.stderr
    assert phonely.exit_code == 2
    assert "set PHONELY_API_KEY, PHONELY_UID, PHONELY_AGENT_IDS" in phonely.stderr
    assert fake_voicenter.requests == []  # nothing was sent


def test_provider_test_of_a_provider_on_nowhere_says_which_are(bare_cli: Context) -> None:
    weya = runner.invoke(app, ["provider", "test", "weya"])
    unknown = runner.invoke(app, ["provider", "test", "nope"])

    assert weya.exit_code == 2
    assert "weya is not on" in weya.stderr
    assert "on in the deployment: voicenter" in weya.stderr
    assert unknown.exit_code == 2
    assert "nope is not a provider (providers: voicenter, phonely" in unknown.stderr


def test_resume_without_credentials_here_skips_the_probe_and_the_workers_deliver(
    bare_cli: Context, ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    fake_voicenter.key = "rotated"
    accept(ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))
    dispatcher.drain(ctx)
    assert "voicenter" in ctx.store.paused()
    fake_voicenter.key = "good-code"  # fixed where the workers run

    result = runner.invoke(app, ["provider", "resume", "voicenter"])

    assert result.exit_code == 0, result.output
    assert "voicenter: probe skipped: this process has no credentials for it" in result.stderr
    assert "voicenter: resumed; staged numbers flushing" in result.stdout
    assert ctx.store.paused() == {}
    dispatcher.drain(ctx)  # the worker, with its credentials
    assert "972501234567" in fake_voicenter.blacklist


def test_resume_of_a_provider_on_nowhere_refuses_and_leaves_redis_alone(
    bare_cli: Context, ctx: Context, dispatcher: QueueDispatcher
) -> None:
    ctx.store.pause("weya", "401", "WEYA_API_TOKEN", "refused")

    result = runner.invoke(app, ["provider", "resume", "weya"])

    assert result.exit_code == 2
    assert "weya is not on" in result.stderr
    assert "weya" in ctx.store.paused()
    assert dispatcher.sent == []


def test_reconcile_without_credentials_here_says_so(bare_cli: Context, ctx: Context) -> None:
    announce(ctx, "phonely:agent-a", PHONELY)

    one = runner.invoke(app, ["reconcile", "phonely"])
    every = runner.invoke(app, ["reconcile"])
    unlistable = runner.invoke(app, ["reconcile", "voicenter"])

    assert one.exit_code == 2
    assert "phonely is on in the deployment, but this process has no credentials" in one.stderr
    assert "set PHONELY_API_KEY, PHONELY_UID, PHONELY_AGENT_IDS" in one.stderr
    assert every.exit_code == 2
    assert "skipped phonely: this process has no credentials for it" in every.stderr
    assert unlistable.exit_code == 2
    assert "voicenter cannot list its blacklist" in unlistable.stderr


@pytest.fixture
def phonely_here(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A terminal with Phonely's credentials, beside its fake."""
    w = World("phonely")
    cli_builds(w.ctx, monkeypatch)
    yield w
    wiring.reset()


def test_reconcile_in_a_pipe_prints_rows_and_a_sample_of_extras_without_a_bar(
    phonely_here: World,
) -> None:
    w = phonely_here
    w.add("+972501234567")
    w.settle()
    for i in range(25):  # numbers someone else put on agent-a's list
        w.fake.listed("agent-a").add(f"97259{i:07d}")

    result = runner.invoke(app, ["reconcile", "phonely"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "target\tprovider_holds\tledger_blocks\tmissing_repushed\textra\textra_removing",
        "phonely:agent-a\t26\t1\t0\t25\t0",
        "phonely:agent-b\t1\t1\t0\t0\t0",
    ]
    notes = result.stderr.splitlines()
    assert notes[:2] == ["extra at phonely:agent-a: +972590000000",
                         "extra at phonely:agent-a: +972590000001"]  # fmt: skip
    assert "extra at phonely:agent-a: 5 more" in notes
    assert len([n for n in notes if n.startswith("extra at")]) == 21
    assert not set("━─│╸╺") & set(result.output)  # no bar, no box drawing


def test_provider_list_shows_where_a_catch_up_stands(bare_cli: Context, ctx: Context) -> None:
    from worker.pipeline import batching as work

    numbers = [f"+97250{(i * 109) % 32768:07d}" for i in range(300)]  # spread over the index
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n) for n in numbers]))
    announce(ctx, "phonely:agent-a", PHONELY)  # a worker with Phonely starts: a catch-up
    ctx.directory(refresh=True)
    work.backfill(ctx, page=100)

    result = runner.invoke(app, ["provider", "list"])
    as_json = runner.invoke(app, ["provider", "list", "--json"])

    listed = {r["target"]: r for r in rows(result.stdout)}
    assert listed["voicenter"]["catch_up"] == "-"
    percent = int(listed["phonely:agent-a"]["catch_up"].removeprefix("blocked ").rstrip("%"))
    assert 0 < percent < 100
    (line,) = [n for n in result.stderr.splitlines() if n.startswith("catching up")]
    assert line.startswith(f"catching up phonely:agent-a: blocked numbers {percent}% (about ")
    assert line.endswith(" of 300)")
    assert not set("━─│╸╺") & set(result.output)
    records = {r["target"]: r for r in map(json.loads, as_json.stdout.splitlines())}
    assert records["voicenter"]["catch_up"] is None
    at = records["phonely:agent-a"]["catch_up"]
    assert (at["stage"], at["percent"], at["blocked"]) == ("blocked", percent, 300)
