"""Properties: normalisation never raises; last-writer-wins ends the same in any order."""

from __future__ import annotations

import contextlib
import itertools
import random
from datetime import UTC, datetime, timedelta

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FakeClock, make_settings
from tests.fakes.dispatch import QueueDispatcher
from worker.domain.phones import Convention, Normalised, Rejected, normalise
from worker.pipeline.accept import AcceptError, Event, PhoneInput, accept
from worker.providers.base import Action
from worker.runtime.wiring import build_context
from worker.state.codec import ledger_blocks


@given(
    raw=st.one_of(
        st.text(max_size=40),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.from_regex(r"\+?[0-9 ()\-.]{0,25}", fullmatch=True),
        st.none(),
        st.booleans(),
    ),
    region=st.sampled_from(["IL", "GB", "US", "DE", "CZ"]),
    convention=st.sampled_from(list(Convention)),
)
@settings(max_examples=2000, deadline=None)
def test_normalise_never_raises(raw: object, region: str, convention: Convention) -> None:
    result = normalise(raw, region, convention)
    assert isinstance(result, Normalised | Rejected)
    if isinstance(result, Normalised):
        assert result.e164.startswith("+") and result.e164[1:].isdigit()


EVENT = st.tuples(
    st.sampled_from([Action.ADD, Action.REMOVE]),
    st.integers(min_value=0, max_value=20),  # seconds ago: ties are likely
    st.sampled_from([0, 3600, 7200]),  # expiry from now, 0 = permanent
    st.sampled_from(["api", "sms", "crm"]),  # the sources behind a block decide its routes
)


@given(events=st.lists(EVENT, min_size=1, max_size=5), seed=st.integers(0, 1000))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_last_writer_wins_is_the_same_in_any_arrival_order(
    events: list[tuple[Action, int, int, str]], seed: int
) -> None:
    orders = list(itertools.permutations(range(len(events))))
    random.Random(seed).shuffle(orders)
    finals = set()
    for order in orders[:6]:
        clock = FakeClock()
        ctx = build_context(
            make_settings(voicenter_api_code=None),
            client=fakeredis.FakeRedis(),
            dispatcher=QueueDispatcher(),
            clock=clock,
        )
        now = datetime.fromtimestamp(clock.now, tz=UTC)
        for i in order:
            action, ago, expiry, source = events[i]
            event = Event(
                source,
                action,
                [PhoneInput("+972501234567")],
                idempotency_key=f"e{i}",
                occurred_at=now - timedelta(seconds=ago),
                expires_at=now + timedelta(seconds=expiry)
                if expiry and action is Action.ADD
                else None,
            )
            with contextlib.suppress(AcceptError):  # e.g. a remove with no valid time
                accept(ctx, event)
        ledger = ctx.store.ledger("+972501234567")
        # The blocks (each with its source) and, while blocked, the sources behind it.
        held = ledger_blocks(ledger.get("bl"), ledger.get("t"), ledger.get("rs"))
        blocks = sorted(map(tuple, held))
        behind = frozenset(ledger.get("rs", "").split("\n")) if ledger["s"] == "blocked" else None
        finals.add((ledger.get("s"), ledger.get("x"), ledger.get("t"), tuple(blocks), behind))
    assert len(finals) == 1, finals
