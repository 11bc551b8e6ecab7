"""All optout state in Redis: one key scheme, and the Lua scripts that change it atomically.

`Store` is one object with the methods of every part, each part a module of its own over the
keyspace they share:

==================  ========================================================================
module              holds
==================  ========================================================================
``keyspace.py``     the client, the key prefix, the clock, loading and running the scripts
``ledger.py``       per number: accept, expiry, the ledger, audit trail and blocks read back
``chunks.py``       batches and chunks: claim, open, renew, complete, release, retries
``deadletters.py``  dead letters: list, count, replay, purge
``targets.py``      targets announced, the live directory, catch-up and repair
``limits.py``       request slots, pauses, holds, circuits, turns of scheduled runs
``auditlog.py``     the audit stream the archive drains (worker/archive/), its backlog
``bookkeeping.py``  ingress inputs kept for review, counters
``comparison.py``   a reconciliation's comparison of the ledger with a provider's lists
``records.py``      the typed records the scripts answer with and are given
``async_accept.py`` accept from an event loop, with group commit (the HTTP API)
``lua/``            the scripts, each after ``prelude.lua``'s shared helpers
==================  ========================================================================

Key scheme (every key starts with the prefix, default ``optout:``):

=============================  ======  ====================================================
key                            type    holds
=============================  ======  ====================================================
``idem:{source}:{key}``        string  ``{body hash}|{event id}``; expires (30 days default)
``num:{e164}``                 hash    ledger: s (blocked/unblocked), v (version), t (newest
                                       event time ms), rt (latest remove time; absent: no
                                       remove yet), bl (blocks newer than rt: JSON
                                       [[t, expiry, source], ...]), x (expiry ms the
                                       blocks add up to; absent: for good), e (last
                                       event id), n (label), src, r (reason), c (call
                                       context JSON), u (updated ms), xr (1: unblocked
                                       because its expiry passed), rs (the sources of the
                                       adds behind the block, one a line: routes for
                                       catch-up and reconcile), k{code} (per target:
                                       what the provider holds, ``b{version}`` blocked,
                                       ``u{version}`` unblocked, or ``?``: unknown, a push
                                       whose answer no longer counts may have landed
                                       after a newer one)
``audit:batches``              stream  a script call's audit entries until the archive
                                       (worker/archive/) has committed them, one stream entry
                                       a call (of 1,000 at most; more take several): n (the
                                       numbers), e (each number's entry's
                                       JSON), each joined by newlines; a row's id for good is
                                       ``{stream id}.{place}`` (auditlog.py); a number's
                                       history reads its rows here until then (lua/recent.lua)
``audit:rows``                 string  how many rows those hold (the backlog's count)
``audit:log``                  stream  one audit entry a stream entry, until the archive has
                                       committed it: a provider's (pause, resume, review),
                                       and every entry of the release before (an old process
                                       of a rolling upgrade): n (the number; empty for a
                                       provider's), e (the entry's JSON); the stream id is
                                       the entry's id for good
``audit:{e164}``               list    the release before's: the number's entries not yet
                                       archived, newest first, each with its stream id
                                       spliced in as "id" (gone once all are archived); one
                                       without an id (an older release) is given to
                                       ``audit:log`` by the drains (lua/tails.lua)
``adopted:tails``              string  where that pass over the tails stands (a SCAN
                                       cursor, ``+``: it gave some; ``done``: a whole pass
                                       gave none)
``blocked:{bucket}``           set     the digits of the numbers the ledger blocks now,
                                       32,768 sets by the last six digits (intsets: ~10
                                       bytes a number; ledger.py: blocked_bucket)
``blocked:count``              string  how many numbers those sets hold
``blocked:used``               string  bitmap: the buckets that hold any number
``blocked``                    set     numbers the ledger blocked, as versions before
                                       kept them: the sweep moves them into the buckets
``expiry``                     zset    temporarily blocked numbers -> expiry (ms)
``stage:{target}:{action}``    zset    staged numbers -> time staged (ms): the batch
``inflight:{target}``          hash    number -> chunk id pushing it (at most one)
``chunk:{id}``                 string  JSON chunk: id, target, provider, action, created,
                                       items ``[e164, version, name, expires_ms, context,
                                       source, reason, updated_ms]`` (records.py: ChunkItem;
                                       prelude.lua: ITEM)
``leases``                     zset    chunk id -> lease expiry (ms)
``opened``                     hash    chunk id -> pushes that opened it (a task delivered
                                       twice pushes it twice)
``chunkseq``                   string  chunk id counter
``targets:codes``              hash    target -> its code, the ``k{code}`` field of its
                                       confirmations in ``num:{e164}`` (given once)
``targets:codeseq``            string  the last code given
``confirmed:{target}``         hash    number -> confirmation, as versions before the
                                       ledger kept them: the newer word while it exists;
                                       the sweep moves them into ``num:{e164}``
``unknown:{target}``           hash    number -> the chunk in flight whose answer will not
                                       count (a recovered chunk's request may follow it)
``late:{target}``              hash    number -> until when (ms) a request its push lost
                                       (chunk recovered or pushed twice; a timeout or 5xx)
                                       may still land: a push leased before then is
                                       confirmed by one more after it
``latesib:{provider}``         hash    the same for a late request at a provider that keeps
                                       a number in one list (Daktela: it may take another
                                       target's entry): for adds there
``answer:{target}``            hash    number -> JSON of the provider's last answer while
                                       it is a failure (a success is in the audit trail)
``fails:{target}``             hash    number -> ``{version}:{count}``: failed attempts of
                                       that ledger version since its last success
``outage:{target}``            hash    number -> ``{version}:{first}:{last}`` (ms): its
                                       current streak of outages, for the outage budget
``window:{target}``            hash    number -> ``{version}:{spent}:{last}`` (ms): time
                                       spent on answers a window bounds (Weya's 404)
``retry``                      zset    ``{target}|{e164}`` -> due time (ms)
``dlq``                        hash    ``{target}|{e164}`` -> JSON dead letter
``dlq:age``                    zset    ``{target}|{e164}`` -> first failure time (ms)
``paused``                     hash    provider -> JSON (reason, setting to fix, time)
``hold:{provider}``            string  end (ms) of a hold for all workers (Retry-After, or
                                       an open circuit)
``breaker:{provider}``         hash    circuit breaker: fails (chunks in a row whose
                                       requests all failed), opens, since, until, reason
``targets``                    hash    target -> JSON capabilities (provider, add_only, ...)
``targets:live``               zset    target -> live until (ms): announced by a process
                                       that has it enabled; accepts stage for these
``backfill``                   hash    target -> catch-up cursor: ``b:{n}`` over
                                       the blocked index (``{n}`` an SSCAN cursor of the
                                       one set of before, then ``k{bucket}``), then
                                       ``k:{n}`` (a SCAN cursor) over the ledger's
                                       numbers with a confirmation there (``c:{n}``, an
                                       HSCAN cursor of the release before, starts that
                                       pass over),
                                       each ``@{generation}`` (one per catch-up), with
                                       ``!`` for a target never confirmed anything: no
                                       pass over the ledger
``backfill:seq``               string  catch-up generation counter
``routes``                     string  the announced OPTOUT_ROUTES (JSON), what decides where
                                       a block is owed
``adopted``                    string  where the pass that gives blocks kept without their
                                       source their sources stands (``done`` once ended)
``turn:{name}``                string  a scheduled run's turn (expiring): its token
``slots:{provider}``           zset    request token -> lease expiry (concurrency cap)
``rate:{provider}``            zset    request token -> start (ms), last second (rate cap)
``review:{source}``            list    inputs kept for a person (e.g. CDRs of unknown type),
                                       newest first, capped (what the cap pushes out is
                                       logged and counted: ``overflowed``)
``reviews``                    set     the sources that kept an input for review
``reviewed:{source}``          list    how cases were settled (accepted, dropped; by whom),
                                       newest first, capped
``counts:{group}``             hash    counters (e.g. CDRs ignored / reviewed, by reason;
                                       ``review:{source}``: cases settled, by outcome)
``reconcile:{r}:want:{b}``     set     while reconciliation run r runs (expiring): the
                                       digits of the numbers the ledger blocks and owes
                                       the provider, by the blocked index's buckets b
``reconcile:{r}:has:{t}:{b}``  set     the same for what target t's list holds
``metrics:handed``             hash    ``["metric", {labels}]`` (JSON) -> count: what
                                       processes nothing scrapes (the CLI) counted, until
                                       an API's /metrics takes it into its own counters
=============================  ======  ====================================================
"""

from __future__ import annotations

from worker.state.bookkeeping import Bookkeeping
from worker.state.chunks import Chunks
from worker.state.comparison import Comparison
from worker.state.deadletters import DeadLetters
from worker.state.ledger import Ledger
from worker.state.limits import Limits
from worker.state.targets import Targets


class Store(Ledger, Chunks, DeadLetters, Targets, Limits, Bookkeeping, Comparison):
    """The Redis state of optout-worker: one object with every part's methods, each part in
    a module of its own (ledger, chunks, deadletters, targets, limits, bookkeeping,
    comparison) over the keyspace they share (worker/state/keyspace.py)."""
