"""VoodooSMS specifics: integer numbers, lookup-then-delete, and what 33/51/53/23 mean."""

from __future__ import annotations

from tests.worker.providers.test_all_providers import World, numbers


def test_add_sends_an_integer_and_53_is_done() -> None:
    w = World("voodoosms")
    bodies = w.fake.bodies
    w.add("0501234567")
    w.settle()
    assert {"number": 972501234567} in bodies


def test_remove_looks_up_then_deletes_by_id() -> None:
    w = World("voodoosms")
    w.add(*numbers(2))
    w.settle()
    w.remove(numbers(1)[0])
    w.settle()
    kinds = [(method, path) for method, path, _ in w.fake.requests]
    assert ("LOOKUP", "/blacklist") in kinds
    assert any(m == "DELETE" and p.startswith("/blacklist/") for m, p in kinds)
    assert w.fake.listed() == {numbers(2)[1][1:]}


def test_remove_of_a_number_not_listed_is_done_without_a_delete() -> None:
    w = World("voodoosms")
    w.add(*numbers(2))
    w.settle()
    w.fake.listed().discard(numbers(1)[0][1:])  # 33 on the lookup
    w.remove(numbers(1)[0])
    w.settle()
    assert not any(m == "DELETE" for m, _, _ in w.fake.requests)
    assert w.ctx.store.dead_letters() == []


def test_remove_when_the_list_is_empty_is_done() -> None:
    w = World("voodoosms")
    w.add(*numbers(1))
    w.settle()
    w.fake.lists.clear()  # 51 on the lookup
    w.remove(numbers(1)[0])
    w.settle()
    assert w.ctx.store.dead_letters() == []


def test_33_on_an_add_is_a_permanent_bad_number_not_done() -> None:
    w = World("voodoosms")
    w.fake.permanent.add(numbers(1)[0][1:])
    w.add(*numbers(1))
    w.settle()
    dead = w.ctx.store.dead_letters()
    assert dead[0]["reason"] == "bad_format"
    assert w.ctx.store.provider_view(numbers(1)[0], ["voodoosms"])["voodoosms"]["confirmed"] is None


def test_a_lookup_that_does_not_mention_the_number_is_retried_not_done() -> None:
    # Issue 13, item 10: a 200 about some other entry says nothing about ours.
    w = World("voodoosms")
    n = numbers(1)[0]
    w.add(n)
    w.settle()
    answers = {"wrong": 2}
    original = w.fake.serve

    def serve(method: str, path: str, query: dict[str, list[str]], body: object) -> object:
        if method == "GET" and "number" in query and answers["wrong"] > 0:
            answers["wrong"] -= 1
            return 200, {"id": 1, "number": 447800000987, "status": "SUCCESS"}, {}
        return original(method, path, query, body)

    w.fake.serve = serve  # type: ignore[assignment,method-assign]
    w.remove(n)
    w.settle()
    assert answers["wrong"] == 0  # asked twice, answered about another number both times
    assert n[1:] not in w.fake.listed()  # the third lookup found it: deleted
    view = w.ctx.store.provider_view(n, ["voodoosms"])["voodoosms"]
    assert view["confirmed"] == "unblocked:2"
    assert w.ctx.store.dead_letters() == []
