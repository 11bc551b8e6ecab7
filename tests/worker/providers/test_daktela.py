"""Daktela specifics: errors inside 2xx, native expiry, uniqueness checked and corrected."""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.daktela import FakeDaktela
from tests.worker.providers.test_all_providers import World, numbers
from worker.pipeline import batching as work
from worker.pipeline import push as pushing
from worker.pipeline.accept import Event, PhoneInput, accept
from worker.pipeline.context import Context
from worker.providers.base import Action
from worker.state.records import OpenChunk


def daktela() -> tuple[World, FakeDaktela]:
    w = World("daktela")
    assert isinstance(w.fake, FakeDaktela)
    return w, w.fake


def test_a_created_record_carries_number_description_database_and_expiry() -> None:
    w, fake = daktela()
    until = datetime.fromtimestamp(w.clock.now, tz=UTC) + timedelta(days=30)
    event = Event("crm", Action.ADD, [PhoneInput(numbers(1)[0])], reason="asked by email",
                  expires_at=until)  # fmt: skip
    accept(w.ctx, event)
    w.settle()
    (record,) = fake.records.values()
    assert record["number"] == numbers(1)[0]
    assert record["database"] == "Global"
    assert "crm" in record["description"]
    assert "asked by email" in record["description"]
    assert record["expired"] == until.strftime("%Y-%m-%d %H:%M:%S")


def test_an_existing_entry_in_another_database_is_moved() -> None:
    w, fake = daktela()
    n = numbers(1)[0]
    fake.records["x1"] = {"name": "x1", "number": n, "description": "old", "database": "Sales",
                          "expired": None}  # fmt: skip
    w.add(n)
    w.settle()
    assert fake.records["x1"]["database"] == "Global"
    assert w.ctx.store.dead_letters() == []
    assert ("PUT", "/api/v6/blacklistNumbers/x1.json", [n[1:]]) in fake.requests


def test_an_existing_entry_expiring_earlier_is_made_permanent() -> None:
    w, fake = daktela()
    n = numbers(1)[0]
    fake.records["x1"] = {"name": "x1", "number": n, "description": "old", "database": "Global",
                          "expired": "2020-01-01 00:00:00"}  # fmt: skip
    w.add(n)
    w.settle()
    assert fake.records["x1"]["expired"] is None


def test_an_existing_permanent_entry_is_done_without_a_change() -> None:
    w, fake = daktela()
    n = numbers(1)[0]
    fake.records["x1"] = {"name": "x1", "number": n, "description": "old", "database": "Global",
                          "expired": None}  # fmt: skip
    w.add(n)
    w.settle()
    assert not any(method == "PUT" for method, _, _ in fake.requests)


def test_an_error_inside_a_2xx_is_a_failure() -> None:
    w, fake = daktela()
    fake.permanent.add(numbers(1)[0][1:])
    w.add(*numbers(1))
    w.settle()
    dead = w.ctx.store.dead_letters()
    assert dead and "Invalid number" in dead[0]["last_error"]


def test_field_names_and_model_path_are_settings() -> None:
    w = World(
        "daktela",
        daktela_model="blacklistNumbers",
        daktela_fields={"database": "blacklistDatabase"},
    )
    body = w.fake.bodies
    w.add(*numbers(1))
    w.dispatcher.drain(w.ctx)
    assert isinstance(body[0], dict) and body[0]["blacklistDatabase"] == "Global"


def test_a_temporary_add_over_our_earlier_permanent_entry_takes_the_ledgers_expiry() -> None:
    # Issue 13, item 9: a permanent add is pushed; a remove and then a temporary add arrive
    # before the remove is pushed. The entry must end with the temporary block's expiry, or
    # it stays blocked for ever after Daktela's expiry "lifts" it.
    w, fake = daktela()
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    (name,) = fake.records
    assert fake.records[name]["expired"] is None
    w.remove(n)
    w.clock.advance(1)
    until = datetime.fromtimestamp(w.clock.now, tz=UTC) + timedelta(hours=2)
    accept(w.ctx, Event("api", Action.ADD, [PhoneInput(n)], expires_at=until, reason="again"))
    w.settle()
    assert fake.records[name]["expired"] == until.strftime("%Y-%m-%d %H:%M:%S")
    assert ("PUT", f"/api/v6/blacklistNumbers/{name}.json", [n[1:]]) in fake.requests


def test_a_remove_leaves_an_entry_in_another_database_alone() -> None:
    # Issue 13, item 11: a lookup by number alone found the Sales list's entry and deleted it.
    w, fake = daktela()
    n = numbers(1)[0]
    w.add(n)
    w.remove(n)
    fake.records.clear()
    fake.records["s1"] = {"name": "s1", "number": n, "description": "sales", "database": "Sales",
                          "expired": None}  # fmt: skip
    w.settle()
    assert "s1" in fake.records
    assert not any(method == "DELETE" for method, _, _ in fake.requests)
    view = w.ctx.store.provider_view(n, ["daktela:Global"])["daktela:Global"]
    assert view["confirmed"] == "unblocked:2"


def test_a_number_taken_from_another_target_of_ours_is_unknown_there() -> None:
    # Found by review: with two Daktela databases live at once (a rolling change of
    # DAKTELA_BLACKLIST_DATABASE), the second push moved the entry away from the first,
    # whose confirmation still said blocked: a number neither held nor ever pushed again.
    w, fake = daktela()
    sales = w.build(daktela_blacklist_database="Sales")  # another process, another database
    sales.ensure_registered(force=True)
    w.ctx.ensure_registered(force=True)
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    (record,) = [r for r in fake.records.values() if r["number"] == n]
    view = w.ctx.store.provider_view(n, ["daktela:Global", "daktela:Sales"])
    held = f"daktela:{record['database']}"
    lost = ({"daktela:Global", "daktela:Sales"} - {held}).pop()
    assert view[held]["confirmed"] == "blocked:1"
    assert view[lost]["confirmed"] == "?"  # never "blocked" for a list that lacks it


def test_a_lookup_that_ignores_its_filter_confirms_no_remove() -> None:
    # Found by review: field names are settings (unconfirmed by Daktela); when the API
    # ignores an unknown filter field it answers other numbers' entries, and a remove took
    # "not among them" for "not there": done, with the block still in place.
    w, fake = daktela()
    a, b = numbers(2)
    w.add(a, b)
    w.settle()
    fake.ignore_filters = True
    w.remove(a)
    w.settle(rounds=2)
    assert a[1:] in fake.listed()  # still blocked there, and not confirmed otherwise
    assert w.ctx.store.provider_view(a, ["daktela:Global"])["daktela:Global"]["confirmed"] != (
        "unblocked:2"
    )
    fake.ignore_filters = False
    w.settle()
    assert fake.listed() == {b[1:]}


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("GET", (200, {}, {})),
        ("GET", (204, None, {})),
        ("DELETE", (404, "<html>", {})),
        ("DELETE", (404, {"status": 404, "error": "Not Found", "path": "/api"}, {})),
    ],
    ids=[
        "lookup-200-empty-object",
        "lookup-204-no-body",
        "delete-404-of-a-gateway",
        "delete-404-of-a-web-framework",
    ],
)
def test_an_answer_that_is_not_daktelas_confirms_no_remove(
    method: str, answer: tuple[int, Any, dict[str, str]]
) -> None:
    # Found by the twelfth review: a proxy's `{}` to the lookup read as "no entry in this
    # database", and a gateway's 404 to the delete as "deleted already": the remove was
    # confirmed, the block left in place for good.
    w, fake = daktela()
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    original = fake.handle
    hits: list[str] = []

    def gateway_once(verb: str, path: str, *rest: Any) -> Any:
        if verb == method and not hits:
            hits.append(path)
            return answer
        return original(verb, path, *rest)

    fake.handle = gateway_once  # type: ignore[method-assign]
    w.remove(n)
    w.settle()
    assert hits  # the gateway did answer once
    assert fake.listed() == set()  # pushed again, and removed
    view = w.ctx.store.provider_view(n, ["daktela:Global"])["daktela:Global"]
    assert view["confirmed"] == "unblocked:2"


def _lease_one_chunk_per_target(w: World) -> dict[str, OpenChunk]:
    """Run the flushes only, and open the chunk each target's push would take."""
    pushes = []
    while w.dispatcher.tasks:
        kind, args = w.dispatcher.tasks.popleft()
        if kind == "flush":
            work.flush(w.ctx, args[0], args[1], args[2])
        else:
            pushes.append(args[0])
    opened = [w.ctx.store.open_chunk(c, 60) for c in pushes]
    return {o.chunk.target: o for o in opened if o is not None}


def _an_add_leased_for_both_databases(removed_first: bool = False) -> tuple[
    World, FakeDaktela, Context, str, dict[str, OpenChunk]
]:  # fmt: skip
    """Global (the old process) and Sales (the new) both live; an add leased for each
    (`removed_first`: after the number was blocked and removed at both)."""
    w, fake = daktela()
    sales = w.build(daktela_blacklist_database="Sales")
    sales.ensure_registered(force=True)
    w.ctx.ensure_registered(force=True)
    n = numbers(1)[0]
    if removed_first:
        w.add(n)
        w.settle()
        w.remove(n)
        w.settle()
        w.clock.advance(1)
    w.add(n)
    return w, fake, sales, n, _lease_one_chunk_per_target(w)


def test_a_push_answered_before_its_entry_was_moved_away_confirms_nothing() -> None:
    # Found by the second review: Global's request created the entry; before its chunk
    # completed, Sales' push moved the entry into Sales; Global's completion then wrote
    # blocked over the unknown mark.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    original = w.ctx.store.complete

    def sales_pushes_meanwhile(*args: Any) -> Any:
        w.ctx.store.complete = original  # type: ignore[method-assign]
        pushing.push_chunk(sales, chunks["daktela:Sales"])
        return original(*args)

    w.ctx.store.complete = sales_pushes_meanwhile  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])
    assert fake.listed("Sales") == {n[1:]} and fake.listed("Global") == set()
    view = w.ctx.store.provider_view(n, ["daktela:Global", "daktela:Sales"])
    glob = view["daktela:Global"]
    assert glob["confirmed"] == "?"  # not blocked:1
    # Pushed again after a target TTL (by then the old database of a rolling change has
    # lapsed), not at once: two live databases would take the number from each other.
    ttl_ms = w.ctx.settings.target_ttl_seconds * 1000
    assert glob["staged"] is None and glob["retry_at_ms"] == w.clock.now * 1000 + ttl_ms
    # Sales took it, and no remove at Global could have deleted it since: confirmed.
    assert view["daktela:Sales"]["confirmed"] == "blocked:1"


def test_the_database_left_live_after_a_rolling_change_gets_its_numbers_back() -> None:
    # Found by the second review: during a rolling change from Global (old) to Sales (new)
    # the old process moved an entry back into Global; Sales was marked unknown and nothing
    # pushed it again once the old process was gone.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # the new process: created in Sales
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])  # the old one: moved into Global
    assert fake.listed("Global") == {n[1:]}
    for _ in range(30):  # the old process is gone; the new one runs on
        w.clock.advance(60)
        work.sweep(sales)
        work.recover(sales)
        w.dispatcher.drain(sales)
    assert "daktela:Global" not in sales.directory(refresh=True)
    assert fake.listed("Sales") == {n[1:]}
    view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
    assert view["confirmed"] == "blocked:1"


def _globals_remove_in_flight() -> tuple[World, FakeDaktela, Context, str, OpenChunk]:
    """A rolling change Global -> Sales: a number blocked in Global, then removed (v2);
    Sales has pushed its remove (nothing there), Global's is leased, not yet sent."""
    w, fake = daktela()
    sales = w.build(daktela_blacklist_database="Sales")
    w.ctx.ensure_registered(force=True)
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    assert fake.listed("Global") == {n[1:]}
    sales.ensure_registered(force=True)  # the new database goes live
    w.remove(n)  # v2
    chunks = _lease_one_chunk_per_target(w)
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # not there: done
    return w, fake, sales, n, chunks["daktela:Global"]


def _global_lapses(w: World, sales: Context) -> None:
    """Both processes run for a while, then only Sales' (Global's target lapses)."""
    for _ in range(40):
        w.clock.advance(60)
        for p in (sales, w.ctx) if w.clock.now < 1_800_001_200 else (sales,):
            work.sweep(p)
            work.recover(p)
            w.dispatcher.drain(p)
    assert "daktela:Global" not in sales.directory(refresh=True)


def test_a_late_delete_of_an_entry_another_target_took_leaves_that_target_unknown() -> None:
    # Found by the third review: during a rolling change Global -> Sales, Global's remove
    # looked the entry up in Global; before its delete (by the entry's name) landed, Sales
    # pushed a newer add, which moved that entry into Sales. The delete then took Sales'
    # entry: Global's answer no longer counted, but Sales stayed "blocked:3" with nothing
    # there, and once Global lapsed nothing pushed it again.
    w, fake, sales, n, globals_remove = _globals_remove_in_flight()
    original = fake.handle
    looked_up: list[bool] = []

    def sales_adds_after_globals_lookup(*args: Any) -> Any:
        answer = copy.deepcopy(original(*args))  # as sent, before the move below
        method, query = args[0], args[2]
        if method == "GET" and query.get("filter[1][value]") == ["Global"] and not looked_up:
            looked_up.append(True)
            w.clock.advance(1)
            w.add(n)  # v3: Sales' push moves Global's entry into Sales
            pushing.push_chunk(sales, _lease_one_chunk_per_target(w)["daktela:Sales"])
        return answer

    fake.handle = sales_adds_after_globals_lookup  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, globals_remove)  # ... then deletes it by name
    assert looked_up and fake.listed("Sales") == set()
    view = w.ctx.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
    assert view["confirmed"] == "?"  # not blocked:3
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}
    assert sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]["confirmed"] == (
        "blocked:3"
    )


def test_a_recovered_remove_leaves_the_target_that_took_its_entry_unknown() -> None:
    # The same race when Global's worker stalls after its lookup: its chunk is recovered,
    # and its delete may still land. Sales, which took the entry meanwhile, no longer
    # counts as holding it.
    w, fake, sales, n, _ = _globals_remove_in_flight()
    w.clock.advance(1)
    w.add(n)
    pushing.push_chunk(sales, _lease_one_chunk_per_target(w)["daktela:Sales"])  # moved to Sales
    assert fake.listed("Sales") == {n[1:]}
    w.clock.advance(w.ctx.settings.lease_seconds + 1)  # Global's push stalled
    work.recover(w.ctx)
    view = w.ctx.store.provider_view(n, ["daktela:Global", "daktela:Sales"])
    assert view["daktela:Sales"]["confirmed"] == "?"
    assert view["daktela:Sales"]["staged"] == "add"


@pytest.mark.parametrize("global_lags_s", [0.0, 1.0])
def test_a_late_delete_is_caught_when_the_taking_push_answers_last(global_lags_s: float) -> None:
    # Found by the fourth review: the same race, but Sales' push (whose request moved the
    # entry before Global's delete landed) answers after Global's: nothing marked Global's
    # answer as not counting yet, and Sales' "moved" answer confirmed blocked:3 for an entry
    # the delete had taken. And by the sixth: the same with Global's host clock behind.
    w, fake, sales, n, globals_remove = _globals_remove_in_flight()
    global_complete = w.ctx.store.complete

    def complete_on_globals_host(*args: Any) -> Any:
        w.ctx.store.clock = lambda: w.clock.now - global_lags_s
        try:
            return global_complete(*args)
        finally:
            w.ctx.store.clock = w.clock  # type: ignore[assignment]

    w.ctx.store.complete = complete_on_globals_host  # type: ignore[method-assign]
    original, complete = fake.handle, sales.store.complete
    moved, answer_now = threading.Event(), threading.Event()
    pushes: list[threading.Thread] = []

    def complete_later(*args: Any) -> Any:
        moved.set()
        answer_now.wait(10)
        return complete(*args)

    def sales_moves_it_after_globals_lookup(*args: Any) -> Any:
        answer = copy.deepcopy(original(*args))  # as sent, before the move below
        method, query = args[0], args[2]
        if method == "GET" and query.get("filter[1][value]") == ["Global"] and not pushes:
            w.clock.advance(1)
            w.add(n)  # v3
            chunk = _lease_one_chunk_per_target(w)["daktela:Sales"]
            sales.store.complete = complete_later  # type: ignore[method-assign]
            pushes.append(threading.Thread(target=pushing.push_chunk, args=(sales, chunk)))
            pushes[0].start()
            assert moved.wait(10)  # Sales' request has moved the entry; it answers later
        return answer

    fake.handle = sales_moves_it_after_globals_lookup  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, globals_remove)  # deletes it by name, answers first
    fake.handle = original  # type: ignore[method-assign]
    answer_now.set()
    pushes[0].join()
    sales.store.complete = complete  # type: ignore[method-assign]
    assert fake.listed("Sales") == set()
    assert sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]["confirmed"] == "?"
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def test_removes_at_two_live_databases_do_not_unsettle_each_other() -> None:
    # Found by the fourth review: after one recovered remove, each remove that answered
    # marked the other database's remove in flight as not counting, which staged itself
    # again and marked the first one's next push: removes went back and forth without end.
    # A remove cannot be harmed by another's delete: it wants the entry gone.
    w, fake = daktela()
    sales = w.build(daktela_blacklist_database="Sales")
    w.ctx.ensure_registered(force=True)
    sales.ensure_registered(force=True)
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    w.remove(n)
    chunks = _lease_one_chunk_per_target(w)
    w.clock.advance(w.ctx.settings.lease_seconds + 1)  # Global's worker stalls
    w.ctx.store.renew(chunks["daktela:Sales"].chunk.id, w.ctx.settings.lease_seconds)
    assert work.recover(w.ctx) == 1
    pushing.push_chunk(sales, chunks["daktela:Sales"])
    view = w.ctx.store.provider_view(n, ["daktela:Global", "daktela:Sales"])
    assert view["daktela:Sales"]["confirmed"] == "unblocked:2"
    w.settle()
    view = w.ctx.store.provider_view(n, ["daktela:Global", "daktela:Sales"])
    assert {t: v["confirmed"] for t, v in view.items()} == {
        "daktela:Global": "unblocked:2", "daktela:Sales": "unblocked:2",
    }  # fmt: skip
    assert fake.listed("Global") == fake.listed("Sales") == set()


def test_a_recovered_add_whose_late_request_took_the_entry_unsettles_the_other_database() -> None:
    # Found by the fifth review: Global's worker stalled with its request on the wire and
    # its chunk was recovered; the request then moved the entry from Sales into Global, and
    # the late answer ("moved from Sales") went through the recovered-chunk path, which
    # ignored it: Sales stayed blocked:1 with nothing there once Global had lapsed.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # created in Sales
    original = fake.handle
    stalled: list[bool] = []

    def stall_before_the_move(*args: Any) -> Any:
        if args[0] == "PUT" and not stalled:
            stalled.append(True)
            w.clock.advance(w.ctx.settings.lease_seconds + 1)
            assert work.recover(w.ctx) == 1
        return original(*args)

    fake.handle = stall_before_the_move  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])  # the late request moves it
    fake.handle = original  # type: ignore[method-assign]
    assert stalled and fake.listed("Global") == {n[1:]}
    assert sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]["confirmed"] == "?"
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


class _Killed(BaseException):
    """The worker dies between its request and the chunk's completion."""


def _push_then_die(
    w: World, fake: FakeDaktela, chunk: OpenChunk, handle: Any | None = None
) -> None:
    """Global's worker pushes the chunk (its requests answered by `handle`, if given) and
    dies before completing it."""
    original = fake.handle

    def killed(*args: Any) -> Any:
        raise _Killed

    if handle is not None:
        fake.handle = handle  # type: ignore[method-assign]
    w.ctx.store.complete = killed  # type: ignore[method-assign]
    with pytest.raises(_Killed):
        pushing.push_chunk(w.ctx, chunk)
    fake.handle = original  # type: ignore[method-assign]
    del w.ctx.store.complete


def test_a_worker_killed_after_its_request_took_the_entry_unsettles_the_other_database() -> None:
    # Found by the fifth review: recovery unsettled the other databases for a remove
    # only, but an add's request may have moved the entry out of one of them.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # created in Sales
    _push_then_die(w, fake, chunks["daktela:Global"])  # moved Sales -> Global
    assert fake.listed("Global") == {n[1:]}
    w.clock.advance(w.ctx.settings.lease_seconds + 1)
    assert work.recover(sales) == 1
    assert sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]["confirmed"] == "?"
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def test_a_late_add_of_a_database_that_has_gone_is_undone_at_once() -> None:
    # Found by the fifth review: the database a number was taken from got it back only
    # after a target TTL, even when the taker is no longer live (nothing would take it
    # again): ten minutes without the opt-out in the only live database.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # created in Sales
    w.clock.advance(w.ctx.settings.target_ttl_seconds + 1)
    sales.ensure_registered(force=True)  # only Sales announces now
    assert "daktela:Global" not in sales.directory(refresh=True)
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])  # the late add moves it to Global
    assert fake.listed("Sales") == set()
    w.clock.advance(2)
    work.sweep(sales)
    w.dispatcher.drain(sales)
    assert fake.listed("Sales") == {n[1:]}


@pytest.mark.parametrize("removed_first", [False, True])
def test_two_live_databases_do_not_take_a_number_from_each_other_at_push_speed(
    removed_first: bool,
) -> None:
    # Found by the fifth review: when both databases' requests landed before either
    # answered, each "moved" answer pushed its own target again at once, and that push
    # moved the entry back: moves without end while both were live. And by the seventh:
    # the same for as long as a recent remove made each move be checked once more.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases(removed_first)
    fake.records["x1"] = {"name": "x1", "number": n, "description": "", "database": "Sales",
                          "expired": None}  # fmt: skip
    original, complete = fake.handle, sales.store.complete
    sales_landed, answer_now = threading.Event(), threading.Event()
    pushes: list[threading.Thread] = []

    def complete_later(*args: Any) -> Any:
        sales_landed.set()
        answer_now.wait(10)
        return complete(*args)

    def sales_lands_after_global(*args: Any) -> Any:
        answer = original(*args)
        if args[0] == "PUT" and not pushes:  # Global's request has moved it from Sales
            sales.store.complete = complete_later  # type: ignore[method-assign]
            chunk = chunks["daktela:Sales"]
            pushes.append(threading.Thread(target=pushing.push_chunk, args=(sales, chunk)))
            pushes[0].start()
            assert sales_landed.wait(10)  # Sales' request has moved it; it answers later
        return answer

    fake.handle = sales_lands_after_global  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])  # Global answers first
    fake.handle = original  # type: ignore[method-assign]
    answer_now.set()
    pushes[0].join()
    sales.store.complete = complete  # type: ignore[method-assign]
    moves: list[float] = []

    def a_second_per_move(*args: Any) -> Any:
        if args[0] == "PUT":
            moves.append(w.clock.now)
            w.clock.advance(1)
        return original(*args)

    fake.handle = a_second_per_move  # type: ignore[method-assign]
    for _ in range(60):  # two minutes with both live
        w.clock.advance(2)
        for p in (sales, w.ctx):
            work.sweep(p)
            w.dispatcher.drain(p)
    assert len(moves) <= 2, moves  # at most the one check each, not back and forth


def test_a_delete_that_failed_and_lands_after_a_move_is_caught() -> None:
    # Found by the sixth review: a delete answered 503 but carried out later by Daktela,
    # after Sales' push moved the entry: Sales confirmed blocked:3 for nothing.
    w, fake, sales, n, globals_remove = _globals_remove_in_flight()
    original = fake.handle
    deferred: list[str] = []

    def delete_times_out_but_lands_later(*args: Any) -> Any:
        method, path = args[0], args[1]
        if method == "DELETE" and not deferred:
            name = path.rsplit("/", 1)[1].removesuffix(".json")
            deferred.append(name)
            return 503, {"error": ["gateway timeout"]}, {}  # not applied yet
        answer = original(*args)
        if method == "PUT" and deferred and deferred[0] in fake.records:
            del fake.records[deferred[0]]  # the queued DELETE executes now, by name
        return answer

    fake.handle = delete_times_out_but_lands_later  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, globals_remove)  # remove v2 answers 'retry'; ol written now
    w.clock.advance(1)
    w.add(n)  # v3
    chunks = _lease_one_chunk_per_target(w)
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # moves Global's entry; DELETE lands
    fake.handle = original  # type: ignore[method-assign]
    if "daktela:Global" in chunks:
        pushing.push_chunk(w.ctx, chunks["daktela:Global"])
    view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
    _global_lapses(w, sales)
    view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
    assert fake.listed("Sales") == {n[1:]}, view


def test_a_recovered_remove_whose_delete_lands_after_a_move_is_caught() -> None:
    # Found by the sixth review: Global's worker stalled with its delete on the wire and
    # its chunk was recovered (Sales held nothing yet); Sales then took the entry, the
    # delete landed, and the worker died without an answer.
    w, fake, sales, n, globals_remove = _globals_remove_in_flight()
    original, sales_complete = fake.handle, sales.store.complete
    moved, answer_now = threading.Event(), threading.Event()
    pushes: list[threading.Thread] = []
    leased: dict[str, Any] = {}

    def complete_later(*args: Any) -> Any:
        moved.set()
        answer_now.wait(10)
        return sales_complete(*args)

    def stall_after_lookup(*args: Any) -> Any:
        method = args[0]
        if method == "DELETE" and not pushes:  # on the wire: it stalls, lands later
            w.clock.advance(w.ctx.settings.lease_seconds + 1)
            assert work.recover(sales) == 1  # Global's remove recovered
            w.clock.advance(1)
            w.add(n)  # v3
            leased.update(_lease_one_chunk_per_target(w))
            chunk = leased["daktela:Sales"]
            sales.store.complete = complete_later  # type: ignore[method-assign]
            pushes.append(threading.Thread(target=pushing.push_chunk, args=(sales, chunk)))
            pushes[0].start()
            assert moved.wait(10)  # Sales moved the entry; answers later
        return original(*args)

    _push_then_die(
        w, fake, globals_remove, stall_after_lookup
    )  # its DELETE lands, then the worker dies
    answer_now.set()
    pushes[0].join()
    sales.store.complete = sales_complete  # type: ignore[method-assign]
    assert fake.listed("Sales") == set()
    if "daktela:Global" in leased:
        pushing.push_chunk(w.ctx, leased["daktela:Global"])  # its add v3: created in Global
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}, sales.store.provider_view(n, ["daktela:Sales"])


def _open_only(w: World, ctx: Context, target: str) -> OpenChunk:
    """Run the target's flushes and open its push; every other task stays queued."""
    keep, found = [], None
    while w.dispatcher.tasks and found is None:
        kind, args = w.dispatcher.tasks.popleft()
        if kind == "flush" and args[0] == target:
            work.flush(ctx, args[0], args[1], args[2])
            continue
        opened = ctx.store.open_chunk(args[0], 60) if kind == "push" else None
        if opened is not None and opened.chunk.target == target:
            found = opened
        else:
            keep.append((kind, args))
    w.dispatcher.tasks.extend(keep)
    assert found is not None
    return found


def test_a_late_move_after_the_other_database_pushed_again_is_undone() -> None:
    # Found by the eighth review: Global's add found the entry in Sales and stalled before
    # its move; recovery unsettled Sales, whose push at once answered "already" and was
    # trusted; the move then landed and Global's worker died. Sales was confirmed blocked
    # with nothing there, and Global lapsed. A late request at another Daktela target counts
    # for Sales' adds as its own would (`latesib:`).
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # created in Sales
    original = fake.handle

    def stall_before_the_move(*args: Any) -> Any:
        if args[0] == "PUT":
            fake.handle = original  # type: ignore[method-assign]
            w.clock.advance(w.ctx.settings.lease_seconds + 1)
            assert work.recover(sales) == 1  # Sales unsettled and staged at once
            pushing.push_chunk(sales, _open_only(w, sales, "daktela:Sales"))  # "already"
            view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
            assert view["confirmed"] == "?"  # not trusted while the move may land
        return original(*args)

    _push_then_die(
        w, fake, chunks["daktela:Global"], stall_before_the_move
    )  # the move lands; the worker dies
    assert fake.listed("Global") == {n[1:]} and fake.listed("Sales") == set()
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def test_a_late_delete_after_the_recheck_of_a_move_is_undone() -> None:
    # Found by the eighth review: Global's remove looked the entry up and stalled before
    # its delete; after recovery a newer add moved the entry into Sales, and the one more
    # push that a move soon after a remove gets went out at once, answered "already" and was
    # trusted. The delete then landed and Global's worker died: Sales stayed blocked:3 with
    # nothing there.
    w, fake, sales, n, globals_remove = _globals_remove_in_flight()
    original = fake.handle
    pending: list[OpenChunk] = []

    def stall_before_the_delete(*args: Any) -> Any:
        if args[0] == "DELETE":
            fake.handle = original  # type: ignore[method-assign]
            w.clock.advance(w.ctx.settings.lease_seconds + 1)
            assert work.recover(sales) == 1
            w.clock.advance(1)
            w.add(n)  # v3
            leased = _lease_one_chunk_per_target(w)
            pending.extend(o for t, o in leased.items() if t == "daktela:Global")
            pushing.push_chunk(sales, leased["daktela:Sales"])  # moved into Sales
            again = _lease_one_chunk_per_target(w)  # the recheck, at once
            pushing.push_chunk(sales, again["daktela:Sales"])  # "already"
            view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
            assert view["confirmed"] == "?"  # not trusted while the delete may land
        return original(*args)

    _push_then_die(
        w, fake, globals_remove, stall_before_the_delete
    )  # the delete lands; the worker dies
    assert fake.listed("Sales") == set()
    for opened in pending:
        pushing.push_chunk(w.ctx, opened)
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def _fails_then_lands_later(fake: FakeDaktela, method: str) -> list[tuple[Any, ...]]:
    """The first `method` request answers 503 (a gateway that gave up) while Daktela still
    carries it out later: the caller replays the returned request when it lands."""
    original = fake.handle
    deferred: list[tuple[Any, ...]] = []

    def handle(*args: Any) -> Any:
        if args[0] == method and not deferred:
            deferred.append(args)
            fake.handle = original  # type: ignore[method-assign]
            return 503, {"error": ["gateway timeout"]}, {}
        return original(*args)

    fake.handle = handle  # type: ignore[method-assign]
    return deferred


def test_a_failed_move_that_lands_after_the_other_database_pushed_again_is_undone() -> None:
    # Found by the ninth review: Global's move answered 503 but was carried out later; Sales,
    # unsettled by the failure, was pushed at once, answered "already" and was trusted.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # created in Sales
    deferred = _fails_then_lands_later(fake, "PUT")
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])  # the 503
    w.dispatcher.drain(sales)  # Sales pushed again at once: "already"
    view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
    assert view["confirmed"] == "?"  # not trusted while the move may land
    fake.handle(*deferred[0])  # the move lands
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def test_a_failed_delete_that_lands_after_the_recheck_of_a_move_is_undone() -> None:
    # Found by the ninth review: the sixth review's case, but the failed delete lands after
    # the one more push that Sales' move got.
    w, fake, sales, n, globals_remove = _globals_remove_in_flight()
    deferred = _fails_then_lands_later(fake, "DELETE")
    pushing.push_chunk(w.ctx, globals_remove)  # the 503
    w.clock.advance(1)
    w.add(n)  # v3
    chunks = _lease_one_chunk_per_target(w)
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # moves Global's entry into Sales
    again = _lease_one_chunk_per_target(w)  # one more push, at once
    pushing.push_chunk(sales, again["daktela:Sales"])  # "already"
    fake.handle(*deferred[0])  # the delete lands, by name: Sales' entry
    for target, opened in {**chunks, **again}.items():
        if target == "daktela:Global":
            pushing.push_chunk(w.ctx, opened)
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def _a_remove_whose_delete_fails_and_lands_later() -> tuple[
    World, FakeDaktela, str, list[tuple[Any, ...]]
]:  # fmt: skip
    """A blocked number removed (v2): its delete answers 503, to be carried out later."""
    w, fake = daktela()
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    w.remove(n)  # v2
    deferred = _fails_then_lands_later(fake, "DELETE")
    w.dispatcher.drain(w.ctx)
    return w, fake, n, deferred


def test_a_failed_delete_that_lands_after_a_newer_add_is_undone() -> None:
    # Found by the ninth review, any provider: remove v2 answered 503 but landed after add
    # v3 had answered "already" (the entry was still there).
    w, fake, n, deferred = _a_remove_whose_delete_fails_and_lands_later()
    w.clock.advance(1)
    w.add(n)  # v3
    w.dispatcher.drain(w.ctx)  # "already"
    view = w.ctx.store.provider_view(n, ["daktela:Global"])["daktela:Global"]
    assert view["confirmed"] == "?"
    fake.handle(*deferred[0])  # the delete lands
    w.settle()
    assert fake.listed("Global") == {n[1:]}


def test_a_database_registered_after_a_recovery_is_warned_of_its_late_move() -> None:
    # Found by the ninth review: Global's move stalled and its chunk was recovered while
    # Global was our only Daktela target; Sales registered (a rolling change's new
    # process), caught up and took the entry, and the stalled move then took it back.
    w, fake = daktela()
    w.ctx.ensure_registered(force=True)
    n = numbers(1)[0]
    fake.records["x1"] = {"name": "x1", "number": n, "description": "", "database": "Other",
                          "expired": None}  # fmt: skip
    w.add(n)
    globals_add = _lease_one_chunk_per_target(w)["daktela:Global"]
    original = fake.handle
    started: list[Context] = []

    def stall_before_the_move(*args: Any) -> Any:
        if args[0] == "PUT":
            fake.handle = original  # type: ignore[method-assign]
            w.clock.advance(w.ctx.settings.lease_seconds + 1)
            assert work.recover(w.ctx) == 1
            w.clock.advance(5)
            sales = w.build(daktela_blacklist_database="Sales")
            started.append(sales)
            sales.ensure_registered(force=True)
            work.sweep(sales)  # its catch-up stages the number
            pushing.push_chunk(sales, _open_only(w, sales, "daktela:Sales"))  # takes it
            view = sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]
            assert view["confirmed"] == "?"
        return original(*args)

    _push_then_die(w, fake, globals_add, stall_before_the_move)  # the move lands; the worker dies
    assert fake.listed("Global") == {n[1:]} and fake.listed("Sales") == set()
    _global_lapses(w, started[0])
    assert fake.listed("Sales") == {n[1:]}


def test_a_sibling_mark_stays_while_an_older_push_of_another_database_is_out() -> None:
    # Found by the tenth review: Global's push after the late window dropped the sibling
    # mark while Sales' push, leased before the mark's time, was still out (a long chunk):
    # Sales' "already", given before the lost move landed, was then trusted.
    w, fake, sales, n, chunks = _an_add_leased_for_both_databases()
    pushing.push_chunk(sales, chunks["daktela:Sales"])  # created in Sales
    deferred = _fails_then_lands_later(fake, "PUT")
    pushing.push_chunk(w.ctx, chunks["daktela:Global"])  # the move answers 503
    w.clock.advance(1)
    sales_push = _lease_one_chunk_per_target(w)["daktela:Sales"]
    complete = sales.store.complete

    def the_rest_of_a_long_chunk(*args: Any) -> Any:
        sales.store.complete = complete  # type: ignore[method-assign]
        fake.handle(*deferred[0])  # the move lands: the entry is in Global
        for _ in range(4):  # Global's own push after the window: "already"
            w.clock.advance(60)
            work.sweep(w.ctx)
            w.dispatcher.drain(w.ctx)
        return complete(*args)

    sales.store.complete = the_rest_of_a_long_chunk  # type: ignore[method-assign]
    pushing.push_chunk(sales, sales_push)  # "already", completed last
    assert sales.store.provider_view(n, ["daktela:Sales"])["daktela:Sales"]["confirmed"] == "?"
    _global_lapses(w, sales)
    assert fake.listed("Sales") == {n[1:]}


def test_a_purge_keeps_a_late_mark_a_push_in_flight_still_needs() -> None:
    # Found by the tenth review: the purge of a dead letter dropped a late mark whose time
    # had passed while a push leased before it was still out: its answer was trusted.
    w, fake, n, deferred = _a_remove_whose_delete_fails_and_lands_later()
    original = fake.handle

    def refuse_the_delete(*args: Any) -> Any:
        if args[0] == "DELETE":
            fake.handle = original  # type: ignore[method-assign]
            return 400, {"error": ["locked"], "result": None}, {}
        return original(*args)

    fake.handle = refuse_the_delete  # type: ignore[method-assign]
    w.clock.advance(5)
    work.sweep(w.ctx)
    w.dispatcher.drain(w.ctx)
    store = w.ctx.store
    assert [d["id"] for d in store.dead_letters()] == [f"daktela:Global|{n}"]
    w.clock.advance(1)
    w.add(n)  # v3
    add = _lease_one_chunk_per_target(w)["daktela:Global"]
    complete = store.complete

    def purged_meanwhile(*args: Any) -> Any:
        store.complete = complete  # type: ignore[method-assign]
        fake.handle(*deferred[0])  # the lost delete lands after our add's "already"
        w.clock.advance(w.ctx.late_ms / 1000 + 60)  # a long chunk: the mark's time passes
        store.purge([f"daktela:Global|{n}"], "ops")
        return complete(*args)

    store.complete = purged_meanwhile  # type: ignore[method-assign]
    pushing.push_chunk(w.ctx, add)
    assert store.provider_view(n, ["daktela:Global"])["daktela:Global"]["confirmed"] == "?"
    w.settle()
    assert fake.listed("Global") == {n[1:]}
