"""The audit streams on a real Redis: a script call's entries as one `audit:batches` entry
(a row per number), read back per number and by the drain with the same ids, forgotten only
whole and only once; provider entries and an older process's in `audit:log`."""

from __future__ import annotations

import json

import pytest
import redis

from tests.conftest import FakeClock
from tests.worker.state.scene import N1, N2, N3, OPTIONS, accept, answer, event, lease, live
from worker.providers.base import Action
from worker.state import auditlog
from worker.state.auditlog import Backlog, seq_of
from worker.state.store import Store

ROUTE = {"include": [], "exclude": [], "call": False}


def dead_letter_one(store: Store, n: str) -> None:
    """Accepted (an entry), pushed and refused for good (another): a dead letter."""
    live(store)
    accept(store, Action.ADD, n)
    store.complete(lease(store), {n: answer("permanent", "bad_format")}, OPTIONS)


def test_a_numbers_entries_read_back_with_the_ids_the_drain_gives_them(store: Store) -> None:
    dead_letter_one(store, N1)
    store.purge([f"voicenter|{N1}"], "ops")
    tail = store.audit(N1)
    assert [e["act"] for e in tail] == ["purge", "add", "add"]  # newest first
    pending = {e.entry_id: e for e in store.pending_audit(100)}
    assert [e["id"] for e in tail] == sorted(pending, key=seq_of, reverse=True)
    for entry in tail:
        stream_entry = pending[entry["id"]]
        assert stream_entry.number == N1
        assert json.loads(stream_entry.body) == {k: v for k, v in entry.items() if k != "id"}


def test_a_calls_entries_are_one_stream_entry_with_a_row_per_number(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2, N3)
    assert store.redis.xlen(store.key("audit", "batches")) == 1
    assert store.audit_backlog().entries == 3
    rows = store.pending_audit(100)
    batch = rows[0].batch
    assert [(e.entry_id, e.number, e.rows) for e in rows] == [
        (f"{batch}.0", N1, 3), (f"{batch}.1", N2, 3), (f"{batch}.2", N3, 3)
    ]  # fmt: skip
    # Each number reads its own row only, under the same id.
    assert [e["id"] for e in store.audit(N2)] == [f"{batch}.1"]
    # Rows of a batch order as written, after every earlier stream id's, before later ones'.
    assert seq_of(f"{batch}.0") < seq_of(f"{batch}.1") < seq_of(f"{batch}.2")
    ms = int(batch.split("-")[0])
    assert seq_of(f"{ms - 1}-999") < seq_of(f"{batch}.0") < seq_of(f"{ms + 1}-0.0")


def test_stream_ids_order_as_written() -> None:
    assert seq_of("1796000000000-10") > seq_of("1796000000000-9")
    assert seq_of("1796000000001-0") > seq_of("1796000000000-99")
    assert seq_of("1796000000000-3~abc") == seq_of("1796000000000-3")
    assert seq_of("1796000000000-3.10") > seq_of("1796000000000-3.9")
    assert seq_of("1796000000000-4.0") > seq_of("1796000000000-3.199")
    assert seq_of("1796000000000-3.7~abc") == seq_of("1796000000000-3.7")
    assert seq_of("not an id") == 0


def test_forgetting_archived_entries_removes_exactly_those(store: Store) -> None:
    live(store)
    # A reason no ASCII escapes alone would round-trip, and a newline's escape: the rows of a
    # batch are split at newlines.
    ev = {**event(store, Action.ADD), "reason": 'לקוח ביקש "הסר" \\ ✓ \u2028 \n'}
    store.accept(ev, [(N1, ""), (N2, "")], ROUTE, 3600)
    assert store.audit(N1)[0]["rsn"] == ev["reason"]
    first = store.pending_audit(100)
    assert len(first) == 2
    store.purge([f"voicenter|{N1}"], "ops")  # not a dead letter: nothing, no entry
    store.complete(lease(store), {N1: answer("permanent", "bad_format"),
                                  N2: answer("done")}, OPTIONS)  # fmt: skip
    assert store.forget_archived(first) == 2
    assert store.forget_archived(first) == 0  # a drain that ran twice
    assert [e["out"] for e in store.audit(N1)] == ["dead"]
    assert store.audit_backlog().entries == 2
    rest = store.pending_audit(100)
    assert {e.number for e in rest} == {N1, N2}
    assert store.forget_archived(rest) == 2
    assert store.audit(N1) == [] and store.audit(N2) == []
    assert store.audit_backlog() == Backlog(0, 0)
    assert store.audit_backlog_length() == 0


def test_a_batch_is_forgotten_only_with_every_one_of_its_rows(store: Store) -> None:
    live(store)
    accept(store, Action.ADD, N1, N2)
    rows = store.pending_audit(100)
    assert store.forget_archived(rows[:1]) == 0
    assert store.audit_backlog().entries == 2
    assert store.forget_archived(rows) == 2


def test_a_batch_whose_numbers_and_entries_do_not_pair_is_archived_whole(store: Store) -> None:
    store.redis.xadd(store.key("audit", "batches"), {"n": f"{N1}\n{N2}", "e": '{"at":1}'})
    store.redis.incrby(store.key("audit", "rows"), 2)
    (row,) = store.pending_audit(100)
    assert row.number == "" and json.loads(row.body)["unpaired"]["n"] == [N1, N2]
    assert store.forget_archived([row]) == 1
    # The count follows the stream: nothing waits once it is empty.
    assert store.audit_backlog_length() == 0


def test_the_drain_pages_through_both_streams_in_order(store: Store, clock: FakeClock) -> None:
    store.pause("voicenter", "auth", "VOICENTER_API_CODE", "401")  # to audit:log
    live(store)
    for n in (N1, N2, N3):
        accept(store, Action.ADD, n)
    seen, after = [], None
    while page := store.pending_audit(1, after):
        seen += [e.number for e in page]
        after = page[-1].entry_id
    assert seen == ["", N1, N2, N3]
    assert store.audit_backlog().entries == 4


def test_a_numbers_read_pages_through_a_long_stream(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditlog, "RECENT_PAGE", 4)
    live(store)
    for i in range(18):  # 18 batches, N1 in every third
        accept(store, Action.ADD, f"+120255500{i:02d}", *([N1] if i % 3 == 0 else []))
    assert [e["ev"] for e in store.audit(N1)] == [
        json.loads(e.body)["ev"] for e in reversed(store.pending_audit(100)) if e.number == N1
    ]
    assert len(store.audit(N1)) == 6
    assert len(store.audit(N1, limit=2)) == 2


def test_an_older_processs_tail_is_read_beside_the_stream(store: Store, clock: FakeClock) -> None:
    live(store)
    old = {"at": store.now_ms() - 1000, "act": "add", "ev": "old"}
    store.redis.lpush(store.key("audit", N1), json.dumps(old))
    accept(store, Action.ADD, N1)
    assert [e["ev"] for e in store.audit(N1)][1:] == ["old"]


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


def test_an_older_processs_entry_is_drained_from_its_stream_and_its_tail(store: Store) -> None:
    """The release before wrote each entry to `audit:log` and to the number's tail with the
    stream id spliced in; an old process of a rolling upgrade still does."""
    body = json.dumps({"at": store.now_ms(), "act": "add", "ev": "old"}, separators=(",", ":"))
    entry_id = store.redis.xadd(store.key("audit", "log"), {"n": N1, "e": body}).decode()
    store.redis.lpush(store.key("audit", N1), '{"id":"' + entry_id + '",' + body[1:])
    live(store)
    accept(store, Action.ADD, N1)
    assert [e["id"] for e in store.audit(N1)][1:] == [entry_id]
    pending = store.pending_audit(100)
    assert pending[0].entry_id == entry_id
    assert store.audit_backlog().entries == 2
    assert store.forget_archived(pending) == 2
    assert not store.redis.exists(store.key("audit", N1))
    assert store.audit(N1) == [] and store.audit_backlog_length() == 0


def test_a_call_that_fails_partway_audits_what_it_wrote_before(store: Store) -> None:
    # Redis keeps what a script wrote before it failed (a ledger it cannot read): each
    # change it made keeps its entry, as when each entry was written as it was made.
    live(store)
    store.redis.set(store.key("num", N2), "not a ledger hash")  # HMGET: WRONGTYPE
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.accept(event(store, Action.ADD), [(N1, ""), (N2, "")], ROUTE, 3600)
    assert store.ledger(N1)["s"] == "blocked"
    assert [(e["act"], e["res"]) for e in store.audit(N1)] == [("add", "applied")]
    # A chunk's completion that fails at its last number: the answers before it.
    store.redis.delete(store.key("num", N2))
    accept(store, Action.ADD, N2, N3)
    chunk = lease(store)
    store.redis.delete(store.key("num", N3))
    store.redis.set(store.key("num", N3), "not a ledger hash")
    answers = {n: answer("done") for n in (N1, N2, N3)}
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.complete(chunk, answers, OPTIONS)
    for n in (N1, N2):
        assert store.audit(n)[0].get("out") == "done", store.audit(n)
    assert store.audit_backlog().entries == len(store.pending_audit(100))


def test_a_call_of_many_entries_writes_batches_whose_rows_order_before_later_ids(
    store: Store,
) -> None:
    # A row's seq is ms * 1,000,000 + n * 1,000 + k: a row at k >= 1,000 would share its
    # seq with the first rows of the next batch of its ms and order after them. The admin
    # API purges (or replays) every chosen dead letter in one call: up to 100,000.
    members = {f"voicenter|+9725010{i:05d}": json.dumps({
        "id": f"voicenter|+9725010{i:05d}", "target": "voicenter", "provider": "voicenter",
        "phone": f"+9725010{i:05d}", "reason": "bad_format"}) for i in range(2345)}  # fmt: skip
    store.redis.hset(store.key("dlq"), mapping=members)
    assert store.purge(list(members), "api:ops") == len(members)
    rows = store.pending_audit(10_000)
    assert [e.number for e in rows] == [m.split("|")[1] for m in members]
    assert store.audit_backlog().entries == len(rows)
    seqs = [seq_of(e.entry_id) for e in rows]
    assert seqs == sorted(set(seqs))
    for e in rows:
        ms, n = e.batch.split("-")
        assert seq_of(e.entry_id) < seq_of(f"{ms}-{int(n) + 1}.0"), e.entry_id
    assert store.forget_archived(rows) == len(rows)
    assert store.audit_backlog() == Backlog(0, 0)
