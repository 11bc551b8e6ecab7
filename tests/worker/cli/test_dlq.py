"""`optout dlq purge` and `replay` refuse to guess: an empty filter value is no choice."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from worker.cli.main import app
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

runner = CliRunner()


@pytest.mark.parametrize("option", ["--provider", "--reason", "--phone", "--action"])
def test_purge_with_an_empty_filter_value_refuses(
    cli_ctx: Context,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
    option: str,
) -> None:
    fake_voicenter.permanent.add("972501234567")
    accept(cli_ctx, Event("api", Action.ADD, [PhoneInput("+972501234567")]))
    dispatcher.drain(cli_ctx)
    assert [d["id"] for d in cli_ctx.store.dead_letters()] == ["voicenter|+972501234567"]

    result = runner.invoke(app, ["dlq", "purge", option, ""])

    # `--provider "$UNSET"` must not give up on every provider's dead letters.
    assert result.exit_code == 2, result.output
    assert [d["id"] for d in cli_ctx.store.dead_letters()] == ["voicenter|+972501234567"]
