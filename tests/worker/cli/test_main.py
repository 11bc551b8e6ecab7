"""The `optout` CLI against a fakeredis pipeline: status, dlq, provider, check-config."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from worker.cli.main import app
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.runtime import wiring

runner = CliRunner()


def test_status_shows_state_providers_and_audit(
    cli_ctx: Context, dispatcher: QueueDispatcher
) -> None:
    accept(cli_ctx, Event("crm", Action.ADD, [PhoneInput("0501234567")], reason="asked"))
    dispatcher.drain(cli_ctx)
    result = runner.invoke(app, ["status", "0501234567"])
    assert result.exit_code == 0, result.output
    view = json.loads(runner.invoke(app, ["status", "0501234567", "--json"]).output)
    assert view["state"] == "blocked"
    assert view["providers"]["voicenter"]["confirmed"] == "blocked:1"
    assert view["audit"][0]["target"] == "voicenter"
    assert view["audit"][-1]["source"] == "crm"
    assert view["event_time"] == "2027-01-15T08:00:00Z"  # the test clock, as ISO 8601
    assert "+972501234567" in result.output
    assert "blocked" in result.output
    assert "voicenter" in result.output
    assert "crm" in result.output


def test_status_of_an_unknown_number_exits_1(cli_ctx: Context) -> None:
    result = runner.invoke(app, ["status", "+972501234999"])
    assert result.exit_code == 1
    assert "no opt-out" in result.output


def test_status_refuses_a_non_number(cli_ctx: Context) -> None:
    result = runner.invoke(app, ["status", "hello"])
    assert result.exit_code == 2


def test_dlq_list_and_replay(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    clock: FakeClock,
) -> None:
    fake_voicenter.permanent.add("972501234567")
    accept(cli_ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))
    dispatcher.drain(cli_ctx)
    listed = runner.invoke(app, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert "dead letters: 1" in listed.output
    as_json = runner.invoke(app, ["dlq", "list", "--json", "--reason", "bad_format"])
    entries = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(e["id"], e["action"], e["attempts"], e["first_at"]) for e in entries] == [
        ("voicenter:+972501234567", "add", 1, "2027-01-15T08:00:00Z")
    ]
    none = runner.invoke(app, ["dlq", "list", "--json", "--provider", "other"])
    assert none.output == ""
    national = runner.invoke(app, ["dlq", "list", "--json", "--phone", "0501234567"])
    assert [json.loads(line)["id"] for line in national.output.splitlines()] == [
        "voicenter:+972501234567"
    ]
    assert runner.invoke(app, ["dlq", "list", "--phone", "not-a-number"]).exit_code == 2

    assert runner.invoke(app, ["dlq", "replay"]).exit_code == 2  # says what to replay
    dry = runner.invoke(app, ["dlq", "replay", "--all", "--dry-run"])
    assert "would replay 1" in dry.output
    assert (
        cli_ctx.store.provider_view("+972501234567", ["voicenter"])["voicenter"]["staged"] is None
    )

    fake_voicenter.permanent.clear()
    replayed = runner.invoke(app, ["dlq", "replay", "--provider", "voicenter"])
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 dead letter\n" in replayed.output
    dispatcher.drain(cli_ctx)
    assert cli_ctx.store.dead_letters() == []
    assert "972501234567" in fake_voicenter.blacklist


def test_provider_list_test_and_resume(
    cli_ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    fake_voicenter.key = "rotated"
    accept(cli_ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))
    dispatcher.drain(cli_ctx)
    listed = runner.invoke(app, ["provider", "list"])
    assert "paused" in listed.output
    assert "VOICENTER_API_CODE" in listed.output

    failed = runner.invoke(app, ["provider", "test", "voicenter"])
    assert failed.exit_code == 1
    assert runner.invoke(app, ["provider", "resume", "voicenter"]).exit_code == 1
    assert "voicenter" in cli_ctx.store.paused()

    fake_voicenter.key = "good-code"
    assert runner.invoke(app, ["provider", "test", "voicenter"]).exit_code == 0
    resumed = runner.invoke(app, ["provider", "resume", "voicenter"])
    assert resumed.exit_code == 0, resumed.output
    dispatcher.drain(cli_ctx)
    assert "972501234567" in fake_voicenter.blacklist
    assert runner.invoke(app, ["provider", "test", "nope"]).exit_code == 2


def test_check_config_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICENTER_API_CODE", "s3cret-code")
    monkeypatch.setenv("OPTOUT_ADMIN_TOKEN", "s3cret-admin")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis.internal:6379/0")
    result = runner.invoke(app, ["check-config"])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert ":pw@" not in result.output
    assert "providers enabled: voicenter" in result.output


def test_check_config_names_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTOUT_BATCH_SIZE", "500")
    result = runner.invoke(app, ["check-config"])
    assert result.exit_code == 2
    assert "OPTOUT_BATCH_SIZE" in result.output


def test_api_without_redis_url_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    result = runner.invoke(app, ["api"])
    assert result.exit_code == 2
    assert "REDIS_URL" in result.output


def test_worker_refuses_an_unknown_group_or_one_with_nothing_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://unused.invalid:1/0")
    monkeypatch.setenv("VOICENTER_API_CODE", "good-code")  # a bulk provider only
    monkeypatch.setattr(wiring, "_settings", None)
    wrong = runner.invoke(app, ["worker", "--group", "slow"])
    assert wrong.exit_code == 2
    assert "main or per-number" in wrong.output
    idle = runner.invoke(app, ["worker", "--group", "per-number"])
    assert idle.exit_code == 2
    assert "no provider without a bulk endpoint" in idle.output
    wiring.reset()


def test_dlq_show_takes_the_id_as_listed_the_old_one_or_a_national_number(
    cli_ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    fake_voicenter.permanent.add("972501234567")
    accept(cli_ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")], reason="asked"))
    dispatcher.drain(cli_ctx)
    listed = runner.invoke(app, ["dlq", "list"])  # stdout a pipe: header, tab-separated rows
    entry_id = listed.stdout.splitlines()[1].split("\t")[0]
    assert entry_id == "voicenter:+972501234567"

    for given in (entry_id, "voicenter|+972501234567", "voicenter:0501234567"):
        shown = runner.invoke(app, ["dlq", "show", given, "--json"])
        assert shown.exit_code == 0, shown.output
        view = json.loads(shown.stdout)
        assert view["dead_letter"]["id"] == entry_id
        assert view["dead_letter"]["last_at"] == "2027-01-15T08:00:00Z"
        assert [a.get("outcome") or a.get("result") for a in view["audit"]] == ["dead", "applied"]

    human = runner.invoke(app, ["dlq", "show", entry_id])
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert lines[0].split() == ["id", entry_id]
    assert ["reason", "bad_format"] in [line.split() for line in lines]
    assert ["first_at", "2027-01-15T08:00:00Z"] in [line.split() for line in lines]
    assert "act" not in human.stdout.split() and "1800000000000" not in human.stdout

    assert runner.invoke(app, ["dlq", "show", "voicenter:+972500000000"]).exit_code == 1
    refused = runner.invoke(app, ["dlq", "show", "voicenter:hello"])
    assert refused.exit_code == 2
    assert "not a phone number: contains_letters" in refused.output


def test_dlq_replay_and_purge_take_ids_with_national_numbers(
    cli_ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter
) -> None:
    fake_voicenter.permanent |= {"972501234567", "972501234568"}
    phones = [PhoneInput("+972501234567"), PhoneInput("+972501234568")]
    accept(cli_ctx, Event("api", Action.ADD, phones))
    dispatcher.drain(cli_ctx)
    dry = runner.invoke(app, ["dlq", "purge", "--id", "voicenter:0501234567", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "  voicenter:+972501234567" in dry.output.splitlines()
    assert runner.invoke(app, ["dlq", "purge", "--id", "voicenter:nope"]).exit_code == 2
    assert runner.invoke(app, ["dlq", "purge", "--id", "voicenter"]).exit_code == 2
    assert len(cli_ctx.store.dead_letters()) == 2  # a refused id purges nothing

    purged = runner.invoke(app, ["dlq", "purge", "--id", "voicenter:0501234568"])
    assert "purged 1 dead letter" in purged.output
    assert [d["phone"] for d in cli_ctx.store.dead_letters()] == ["+972501234567"]
    fake_voicenter.permanent.clear()
    replayed = runner.invoke(app, ["dlq", "replay", "--phone", "050-123-4567"])
    assert "replayed 1 dead letter" in replayed.output
    dispatcher.drain(cli_ctx)
    assert cli_ctx.store.dead_letters() == []
