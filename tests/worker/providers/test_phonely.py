"""Phonely specifics: one opt-out fans out to every agent, each tracked on its own."""

from __future__ import annotations

from collections import Counter

from tests.fakes.phonely import FakePhonely
from tests.worker.providers.test_all_providers import World, numbers


class FlakyAgentPhonely(FakePhonely):
    agent_failures: Counter[str]

    def __post_init__(self) -> None:
        self.agent_failures = Counter()

    def serve(self, method: str, path: str, query: dict[str, list[str]], body: object) -> object:  # type: ignore[override]
        agent = body.get("agentId") if isinstance(body, dict) else None
        if agent and self.agent_failures[agent] > 0:
            self.agent_failures[agent] -= 1
            return 500, {"error": "Server error"}, {}
        return super().serve(method, path, query, body)


def test_a_failure_for_one_agent_does_not_repush_the_other() -> None:
    w = World("phonely")
    fake = FlakyAgentPhonely()
    fake.agent_failures["agent-b"] = 2
    w.router.fakes["phonely"] = fake
    w.fake = fake
    w.add(*numbers(3))
    w.settle()
    sent_to = Counter(path.split("#")[1] for _, path, _ in fake.requests)
    # 500s are not logged as served; agent-b's last push confirms the one that succeeded
    # after them, once a 500'd request can no longer land late.
    assert sent_to == {"agent-a": 1, "agent-b": 2}
    assert fake.listed("agent-a") == fake.listed("agent-b") == {n[1:] for n in numbers(3)}
    assert w.ctx.store.dead_letters() == []


def test_numbers_are_sent_with_plus_and_uid_and_agent() -> None:
    w = World("phonely")
    seen = w.fake.bodies
    w.add("0501234567")
    w.settle()
    assert {"uid": "uid-1", "agentId": "agent-a", "numbers": ["+972501234567"]} in seen


def test_not_found_on_remove_is_done() -> None:
    w = World("phonely")
    w.add(*numbers(1))
    w.settle()
    w.fake.lists.clear()  # removed by hand at Phonely meanwhile
    w.remove(*numbers(1))
    w.settle()
    assert w.ctx.store.dead_letters() == []
    view = w.ctx.store.provider_view(numbers(1)[0], ["phonely:agent-a"])["phonely:agent-a"]
    assert view["confirmed"] == "unblocked:2"
