"""Expiring blocks lift themselves: removes pushed where there is no native expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis

from tests.conftest import FakeClock
from tests.fakes.daktela import FakeDaktela
from tests.fakes.dispatch import QueueDispatcher
from tests.fakes.providers import Router, env_for, make_fake
from tests.worker.pipeline.test_targets import build
from worker.pipeline import batching as work
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.providers.base import Action


def test_an_expired_block_is_lifted_and_pushed_as_a_remove_except_where_native() -> None:
    router = Router({n: make_fake(n) for n in ("voicenter", "daktela")})
    env = {
        **env_for("voicenter", "http://voicenter.test"),
        **env_for("daktela", "http://daktela.test"),
    }
    ctx = build(fakeredis.FakeRedis(), router, env)
    clock = ctx.store.clock
    dispatcher = ctx.dispatcher
    assert isinstance(clock, FakeClock) and isinstance(dispatcher, QueueDispatcher)
    temp, perm = "+972501111111", "+972501111112"
    until = datetime.fromtimestamp(clock.now, tz=UTC) + timedelta(hours=1)
    accept(ctx, Event("api", Action.ADD, [PhoneInput(temp)], expires_at=until))
    accept(ctx, Event("api", Action.ADD, [PhoneInput(perm)]))
    dispatcher.drain(ctx)
    daktela = router.fakes["daktela"]
    assert isinstance(daktela, FakeDaktela)
    assert {r["number"]: r["expired"] for r in daktela.records.values()}[temp] == until.strftime(
        "%Y-%m-%d %H:%M:%S"
    )

    clock.advance(1800)
    work.sweep(ctx)
    dispatcher.drain(ctx)
    assert ctx.store.ledger(temp)["s"] == "blocked"  # not yet

    clock.advance(1801)
    work.sweep(ctx)
    clock.advance(2)
    work.sweep(ctx)
    dispatcher.drain(ctx)
    assert ctx.store.ledger(temp)["s"] == "unblocked"
    assert ctx.store.ledger(perm)["s"] == "blocked"
    assert any(a.get("act") == "expire" for a in ctx.store.audit(temp))
    assert router.fakes["voicenter"].listed() == {perm[1:]}
    # Daktela lifts the block itself: no remove is sent, the record stays with its expiry.
    assert not any(method == "DELETE" for method, _, _ in daktela.requests)
    view = ctx.store.provider_view(temp, ["voicenter", "daktela:Global"])
    assert view["voicenter"]["confirmed"] == "unblocked:2"
    assert view["daktela:Global"]["confirmed"] == "unblocked:2"


def test_a_permanent_add_cancels_a_pending_expiry() -> None:
    router = Router({"voicenter": make_fake("voicenter")})
    ctx = build(fakeredis.FakeRedis(), router, env_for("voicenter", "http://voicenter.test"))
    clock = ctx.store.clock
    assert isinstance(clock, FakeClock)
    n = "+972501111111"
    until = datetime.fromtimestamp(clock.now, tz=UTC) + timedelta(minutes=5)
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n)], expires_at=until))
    accept(ctx, Event("api", Action.ADD, [PhoneInput(n)], reason="forever"))
    clock.advance(3600)
    work.sweep(ctx)
    assert ctx.store.ledger(n)["s"] == "blocked"
