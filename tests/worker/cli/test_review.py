"""`optout review`: list and show in a pipe, a terminal and JSON; accept and drop as the
operator, refusing to guess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from tests.worker.cli.conftest import cli_builds
from tests.worker.cli.test_output import _plain, terminal
from tests.worker.ops.test_reviews import REVIEW_SETTINGS, keep
from worker.cli.main import app
from worker.pipeline.context import Context
from worker.runtime import wiring

runner = CliRunner()


@pytest.fixture
def review_ctx(make_ctx: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    ctx: Context = make_ctx(**REVIEW_SETTINGS)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("USER", "dana")
    cli_builds(ctx, monkeypatch)
    yield ctx
    wiring.reset()


def two_cases(ctx: Context, clock: FakeClock) -> tuple[str, str]:
    first = keep(ctx, type="Conference", caller="0527654321")
    clock.advance(90)
    second = keep(ctx, direction="internal", ivruniqueid="call-2")
    return first, second


def test_list_in_a_pipe_is_a_header_and_a_tab_separated_row_per_case(
    review_ctx: Context, clock: FakeClock
) -> None:
    first, second = two_cases(review_ctx, clock)
    result = runner.invoke(app, ["review", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "id\treceived_at\treason\tphones",
        f"{first}\t2027-01-15T08:00:00Z\tunknown_call_type\t+972501234567,+972527654321",
        f"{second}\t2027-01-15T08:01:30Z\tinternal_call\t+972501234567",
    ]
    assert "reviews waiting: 2" in result.stderr
    limited = runner.invoke(app, ["review", "list", "--limit", "1"])
    assert len(limited.stdout.splitlines()) == 2
    assert "showing the oldest 1" in limited.stderr


def test_list_as_json_lines(review_ctx: Context, clock: FakeClock) -> None:
    first, second = two_cases(review_ctx, clock)
    result = runner.invoke(app, ["review", "list", "--json", "--source", "voicenter"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["reason"], r["call_id"]) for r in records] == [
        (first, "unknown_call_type", "2020072818dcDHFJcc804"), (second, "internal_call", "call-2"),
    ]  # fmt: skip
    assert records[0]["candidates"][0] == {"field": "target", "value": "0501234567",
                                           "phone": "+972501234567"}  # fmt: skip
    assert runner.invoke(app, ["review", "list", "--json", "--source", "dnc"]).stdout == ""


@pytest.mark.parametrize("width", [80, 90, 120])
def test_list_in_a_terminal_keeps_ids_times_and_numbers_whole(
    review_ctx: Context, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    first, _ = two_cases(review_ctx, clock)
    screen = terminal(monkeypatch, width)
    assert runner.invoke(app, ["review", "list"]).exit_code == 0
    shown = _plain(screen.getvalue())
    assert first in shown.split()
    assert "+972501234567,+972527654321" in shown.split()
    assert "2027-01-15T08:00:00Z" in shown.split()
    assert "…" not in shown
    assert all(len(line) <= width for line in shown.splitlines())


def test_show_is_readable_and_json(review_ctx: Context, clock: FakeClock) -> None:
    first, _ = two_cases(review_ctx, clock)
    shown = runner.invoke(app, ["review", "show", first])
    assert shown.exit_code == 0, shown.output
    rows = shown.stdout.splitlines()
    assert f"id\t{first}" in rows
    assert "call_time\t2020-07-28T18:19:10Z" in rows
    assert "caller\t0527654321\t+972527654321\t-" in rows
    assert '  "ivruniqueid": "2020072818dcDHFJcc804",' in rows  # the input itself
    as_json = json.loads(runner.invoke(app, ["review", "show", first, "--json"]).stdout)
    assert as_json["input"]["type"] == "Conference"
    assert as_json["phones"] == ["+972501234567", "+972527654321"]
    missing = runner.invoke(app, ["review", "show", "voicenter-000000000000"])
    assert missing.exit_code == 1
    assert "no review voicenter-000000000000" in missing.stderr


def test_accept_makes_the_opt_out_as_the_operator(
    review_ctx: Context,
    clock: FakeClock,
    dispatcher: QueueDispatcher,
    fake_voicenter: FakeVoicenter,
) -> None:
    first, second = two_cases(review_ctx, clock)
    unsure = runner.invoke(app, ["review", "accept", first])
    assert unsure.exit_code == 2
    assert "say which number" in unsure.stderr and "+972527654321" in unsure.stderr
    bad = runner.invoke(app, ["review", "accept", first, "--phone", "201"])
    assert bad.exit_code == 2
    assert "too_short" in bad.stderr
    assert review_ctx.store.ledger("+972527654321") == {}

    done = runner.invoke(app, ["review", "accept", first, "--phone", "0527654321",
                               "--note", "caller pressed 9"])  # fmt: skip

    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"{first}: +972527654321 opted out (event ")
    assert "dated 2020-07-28T18:19:10Z" in done.stdout
    (entry,) = [e for e in review_ctx.store.audit("+972527654321") if "ev" in e]
    assert entry["ctx"]["by"] == "cli:dana"
    assert entry["ctx"]["note"] == "caller pressed 9"
    dispatcher.drain(review_ctx)
    assert fake_voicenter.pushed() == [["972527654321"]]
    again = runner.invoke(app, ["review", "accept", first, "--phone", "0527654321"])
    assert again.exit_code == 1
    assert [c["id"] for c in _listed()] == [second]


def test_accept_refuses_a_number_the_cdr_does_not_hold(
    review_ctx: Context, clock: FakeClock
) -> None:
    first, _ = two_cases(review_ctx, clock)
    refused = runner.invoke(app, ["review", "accept", first, "--phone", "0561111111"])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    said = " ".join(refused.stderr.split())  # as wrapped at 80 columns
    assert "+972561111111 is not a number found in this case's CDR" in said
    assert "(candidates: +972501234567, +972527654321)" in said
    assert review_ctx.store.ledger("+972561111111") == {}
    assert len(_listed()) == 2


def test_drop_takes_the_case_off_as_the_operator(review_ctx: Context, clock: FakeClock) -> None:
    first, second = two_cases(review_ctx, clock)
    result = runner.invoke(app, ["review", "drop", second, "--note", "a test call"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{second}: dropped\n"
    assert "1 review waiting" in result.stderr
    (record,) = review_ctx.store.reviewed("voicenter")
    assert (record["outcome"], record["by"], record["note"]) == ("dropped", "cli:dana",
                                                                 "a test call")  # fmt: skip
    assert [c["id"] for c in _listed()] == [first]
    assert runner.invoke(app, ["review", "drop", second]).exit_code == 1


def _listed() -> list[dict[str, Any]]:
    out = runner.invoke(app, ["review", "list", "--json"]).stdout
    return [json.loads(line) for line in out.splitlines()]
