"""The audit stream on a real Redis: every entry in `audit:log` and on its number's tail with
the same id, provider entries in the stream only, and exactly what was archived forgotten."""

from __future__ import annotations

import json

from tests.conftest import FakeClock
from tests.worker.state.scene import N1, OPTIONS, accept, answer, event, lease, live
from worker.providers.base import Action
from worker.state.store import Store

ROUTE = {"include": [], "exclude": [], "call": False}


def dead_letter_one(store: Store, n: str) -> None:
    """Accepted (an entry), pushed and refused for good (another): a dead letter."""
    live(store)
    accept(store, Action.ADD, n)
    store.complete(lease(store), {n: answer("permanent", "bad_format")}, OPTIONS)


def test_an_entry_goes_to_the_stream_and_to_its_tail_with_the_stream_id(store: Store) -> None:
    dead_letter_one(store, N1)
    store.purge([f"voicenter|{N1}"], "ops")
    (tail_entry, *_) = store.audit(N1)
    pending = {e.entry_id: e for e in store.pending_audit(100)}
    assert tail_entry["id"] in pending
    stream_entry = pending[tail_entry["id"]]
    assert stream_entry.number == N1
    assert json.loads(stream_entry.body) == {k: v for k, v in tail_entry.items() if k != "id"}


def test_forgetting_archived_entries_removes_exactly_those(store: Store) -> None:
    live(store)
    # A reason no ASCII escapes alone would round-trip: the tail's value must match exactly.
    ev = {**event(store, Action.ADD), "reason": 'לקוח ביקש "הסר" \\ ✓ \u2028'}
    store.accept(ev, [(N1, "")], ROUTE, 3600)
    store.complete(lease(store), {N1: answer("permanent", "bad_format")}, OPTIONS)
    first = store.pending_audit(100)
    assert len(first) == 2
    store.purge([f"voicenter|{N1}"], "ops")  # one more, not archived
    assert store.forget_archived(first) == len(first)
    assert store.forget_archived(first) == 0  # a drain that ran twice
    left = store.audit(N1)
    assert [e["act"] for e in left] == ["purge"]
    (last,) = store.pending_audit(100)
    assert last.entry_id == left[0]["id"]
    store.forget_archived([last])
    assert not store.redis.exists(store.key("audit", N1))  # no tail once all are archived
    assert store.audit_backlog().entries == 0


def test_the_tail_stays_capped_while_the_stream_keeps_everything(store: Store) -> None:
    for _ in range(25):  # the store's cap is 20
        store._run("reconcile", "voicenter", json.dumps([N1]), "extra", "ops", store.audit_cap)
    assert len(store.audit(N1)) == 20
    assert store.audit_backlog().entries == 25


def test_pauses_and_resumes_are_provider_entries_in_the_stream(
    store: Store, clock: FakeClock
) -> None:
    store.pause("voicenter", "auth", "VOICENTER_API_CODE", "401")
    clock.advance(5)
    assert store.resume("voicenter", "cli:dana") is True
    assert store.resume("voicenter", "cli:dana") is False  # not paused: nothing recorded
    entries = store.pending_audit(10)
    assert [e.number for e in entries] == ["", ""]
    bodies = [json.loads(e.body) for e in entries]
    assert [(b["act"], b["prov"]) for b in bodies] == [
        ("pause", "voicenter"),
        ("resume", "voicenter"),
    ]
    assert bodies[1] == {
        "at": store.now_ms(),
        "prov": "voicenter",
        "act": "resume",
        "by": "cli:dana",
    }
    assert store.audit_backlog().oldest_ms == store.now_ms() - 5000
