"""What every script shares: the key prefix, the time it runs by, and the positions of a
chunk's item named alike in prelude.lua and records.py."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from importlib import resources

import fakeredis
import redis

from tests.conftest import FakeClock
from tests.worker.state.scene import N1, accept, live
from worker.providers.base import Action
from worker.state.clock import ServerClock
from worker.state.keyspace import _SCRIPTS, _load_script
from worker.state.records import ChunkItem, Claimed
from worker.state.store import Store


def test_prelude_names_a_chunk_items_positions_as_chunk_item_has_them() -> None:
    prelude = (resources.files("worker.state") / "lua" / "prelude.lua").read_text()
    table = re.search(r"local ITEM = \{(.*?)\}", prelude, re.S)
    assert table is not None
    named = {name: int(i) for name, i in re.findall(r"(\w+) = (\d+)", table.group(1))}
    assert sorted(named, key=named.__getitem__) == [f.name for f in fields(ChunkItem)]
    assert sorted(named.values()) == list(range(1, len(named) + 1))
    constructor = re.search(r"local function chunk_item\((.*?)\)\n  return \{(.*?)\}", prelude)
    assert constructor is not None
    assert (
        constructor.group(1) == constructor.group(2) == ", ".join(f.name for f in fields(ChunkItem))
    )


def test_scripts_run_by_the_callers_clock_when_given_one(store: Store, clock: FakeClock) -> None:
    live(store)
    accept(store, Action.ADD, N1)
    assert store.ledger(N1)["u"] == str(int(clock.now * 1000))
    assert store.argv("x") == [store.prefix, int(clock.now * 1000), "x"]


def test_without_one_they_run_by_the_servers_clock(real_redis: redis.Redis) -> None:
    store = Store(real_redis, prefix="optout-state-server-clock:")
    try:
        assert isinstance(store.clock, ServerClock)
        assert store.argv("x") == [store.prefix, "", "x"]
        seconds, micros = real_redis.time()
        live(store)
        accept(store, Action.ADD, N1)
        written = int(store.ledger(N1)["u"])
        assert abs(written - (seconds * 1000 + micros // 1000)) < 5000
        assert abs(store.now_ms() - written) < 5000
    finally:
        keys = list(real_redis.scan_iter(match=store.prefix + "*"))
        if keys:
            real_redis.delete(*keys)


def test_every_script_is_loaded_and_compiles_on_a_real_redis(real_redis: redis.Redis) -> None:
    # Each body runs as a function (keyspace.py: audited), so every prelude local it names is
    # an upvalue of that function, and Lua 5.1 allows 60 (the prelude has more): a script
    # no test happens to run would fail only in production. SCRIPT LOAD compiles each.
    lua = resources.files("worker.state") / "lua"
    files = {p.name.removesuffix(".lua") for p in lua.iterdir() if p.name.endswith(".lua")}
    assert files - {"prelude"} == set(_SCRIPTS)
    for name in _SCRIPTS:
        real_redis.script_load(_load_script(name))


def test_scripts_run_in_order_in_one_round_trip_load_again_after_a_restart(
    clock: FakeClock,
) -> None:
    # fakeredis: SCRIPT FLUSH on the shared server would empty every other test's cache.
    store = Store(fakeredis.FakeRedis(), prefix="order:", clock=clock)
    live(store)
    accept(store, Action.ADD, N1)
    args = ("voicenter", "voicenter", "add", 100, 60_000, "all", 0, 1, 0, "0")
    # The open runs after the claim: it finds the chunk the claim just made.
    claimed, found = store._run_in_order([("claim", args), ("open", ("1", 60_000))])
    assert Claimed.decode(claimed).chunks == ["1"]
    assert json.loads(found)["chunk"]
    store.redis.script_flush()  # Redis started over: its script cache is empty
    renewed, gone = store._run_in_order([("renew", ("1", 60_000)), ("renew", ("404", 60_000))])
    assert (renewed, gone) == (1, 0)
    # An error is answered in its place; the calls after it run all the same.
    failed, after = store._run_in_order([("renew", ("1", "x")), ("renew", ("1", 60_000))])
    assert isinstance(failed, redis.ResponseError) and after == 1
