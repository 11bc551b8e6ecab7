"""The SLA report: what is pending where, read a page at a time, stopping at the limit."""

from __future__ import annotations

import pytest

from tests.conftest import FakeClock
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.voicenter import FakeVoicenter
from worker.ops import sla
from worker.ops.sla import overdue
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action

PHONELY = {"provider": "phonely", "add_only": False, "max_batch": 100}


def _add(ctx: Context, *numbers: str) -> None:
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n) for n in numbers]))


def test_dead_retrying_and_staged_numbers_are_overdue_once_their_state_is_old(
    ctx: Context, dispatcher: QueueDispatcher, fake_voicenter: FakeVoicenter, clock: FakeClock
) -> None:
    dead, retrying, staged = "+972501111111", "+972502222222", "+972503333333"
    done = "+972504444444"
    fake_voicenter.permanent.add(dead[1:])
    fake_voicenter.flaky[retrying[1:]] = 5
    _add(ctx, dead, retrying, done)
    dispatcher.drain(ctx)
    dispatcher.tasks.clear()
    _add(ctx, staged)  # its flush never runs
    clock.advance(7200)
    young = "+972505555555"
    _add(ctx, young)  # staged too, but its state is minutes old

    late = overdue(ctx, 3600)

    assert [(r.phone, r.state, r.pending) for r in late] == [
        (dead, "blocked", ["voicenter"]), (retrying, "blocked", ["voicenter"]),
        (staged, "blocked", ["voicenter"]),
    ]  # fmt: skip
    assert all(r.age_seconds == pytest.approx(7200) for r in late)


def test_the_limit_stops_the_reading_and_each_number_still_names_every_target(
    ctx: Context, clock: FakeClock
) -> None:
    ctx.ensure_registered(force=True)
    ctx.store.register_targets({"phonely:agent-a": PHONELY}, 600)
    numbers = [f"+97250{i:07d}" for i in range(30)]
    _add(ctx, *numbers)  # staged at both targets, never pushed
    clock.advance(7200)
    seen: list[tuple[str, int, int | None]] = []

    late = overdue(ctx, 3600, limit=5, progress=lambda *p: seen.append(p))

    assert len(late) == 5
    assert all(r.pending == ["phonely:agent-a", "voicenter"] for r in late)
    assert seen == [("pending numbers", 30, 60)]  # one page of one batch, of 60 pairs


def test_numbers_staged_at_one_time_are_each_read_once_across_pages(
    ctx: Context, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sla, "PAGE", 3)
    first = [f"+97250{i:07d}" for i in range(10)]
    _add(ctx, *first)  # one accept: ten numbers staged at one time
    clock.advance(1)
    _add(ctx, "+972519999999", "+972518888888")
    clock.advance(7200)
    seen: list[tuple[str, int, int | None]] = []
    late = overdue(ctx, 3600, progress=lambda *p: seen.append(p))
    assert sorted(r.phone for r in late) == sorted([*first, "+972519999999", "+972518888888"])
    assert seen[-1] == ("pending numbers", 12, 12)  # none skipped, none read twice
