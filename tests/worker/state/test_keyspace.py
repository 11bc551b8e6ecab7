"""What every script shares: the key prefix, the time it runs by, and the positions of a
chunk's item named alike in prelude.lua and records.py."""

from __future__ import annotations

import re
from dataclasses import fields
from importlib import resources

import redis

from tests.conftest import FakeClock
from tests.worker.state.scene import N1, accept, live
from worker.providers.base import Action
from worker.state.clock import ServerClock
from worker.state.keyspace import _SCRIPTS, _load_script
from worker.state.records import ChunkItem
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
