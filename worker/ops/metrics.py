"""Prometheus metrics: counters and histograms updated in code, gauges read from Redis.

Processes on one machine share counters through prometheus_client's multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set (`optout up` sets it; Celery's prefork children need it).
A process that nothing scrapes (`optout import`, `reconcile`, `consume`) hands its counts
over through Redis, and the API's /metrics takes them into its own (`HandOver`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

if TYPE_CHECKING:
    from worker.state.store import Store

EVENTS = Counter(
    "optout_events_total", "Opt-out events by source and outcome", ["source", "outcome"]
)
ACCEPTED = Counter(
    "optout_numbers_accepted_total",
    "Distinct numbers of accepted events (not duplicates), by source",
    ["source"],
)
REJECTED = Counter(
    "optout_numbers_rejected_total", "Numbers refused at accept, by reason", ["source", "reason"]
)
CDRS = Counter("optout_cdrs_total", "Voicenter CDRs by what became of them", ["outcome"])
PUSHED = Counter(
    "optout_numbers_pushed_total",
    "Numbers pushed, by provider and outcome",
    ["provider", "outcome"],
)
LATENCY = Histogram(
    "optout_provider_request_seconds",
    "Provider request latency",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
BATCH = Histogram(
    "optout_batch_size",
    "Numbers per pushed chunk",
    ["provider"],
    buckets=(1, 5, 10, 25, 50, 75, 100),
)
RECONCILED = Counter(
    "optout_reconcile_numbers_total",
    "Numbers reconciliation found missing at a provider, or extra there",
    ["target", "found"],
)
PROPAGATION = Histogram(
    "optout_propagation_seconds",
    "From the ledger taking a state to a provider confirming it",
    ["provider"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400),
)

ARCHIVED = Counter(
    "optout_audit_archived_entries_total", "Audit entries moved from Redis into the archive"
)


#: The counters a process hands over (histograms stay where they were observed).
_COUNTERS = {f"{c._name}_total": c for c in (EVENTS, ACCEPTED, REJECTED, CDRS, PUSHED, RECONCILED)}


def _totals() -> dict[str, int]:
    """This process's counts, each as `["optout_events_total", {labels}]` in JSON."""
    out: dict[str, int] = {}
    for name, counter in _COUNTERS.items():
        for family in counter.collect():
            for sample in family.samples:
                if sample.name == name and sample.value:
                    out[json.dumps([name, sample.labels], sort_keys=True)] = int(sample.value)
    return out


class HandOver:
    """What this process counted since it was created, added to Redis for the API's
    /metrics to take (`take_over`): a CLI command's counters die with it, and nothing
    scrapes it. The API takes them into one process's counters, so several API processes
    or pods never show them twice, and a restarted one counts them from zero, as it does
    its own. A process in multiprocess mode counts in a directory a /metrics on this
    machine reads already: it hands nothing over."""

    def __init__(self, store: Store, every: float = 10.0) -> None:
        self.store = store
        self.every = every
        self._sent = _totals()  # counted before: not this command's (tests share a process)
        self._last = time.monotonic()

    def __call__(self) -> None:
        self._last = time.monotonic()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return
        now = _totals()
        delta = {k: v - self._sent.get(k, 0) for k, v in now.items() if v > self._sent.get(k, 0)}
        if delta:
            self.store.hand_over_counts(delta)
            self._sent = now

    def due(self) -> bool:
        """For a long-running process: `every` seconds have passed since the last."""
        return time.monotonic() - self._last >= self.every


def take_over(store: Store) -> None:
    """Add the counts other processes handed over to this process's counters."""
    for field, count in store.take_handed_counts().items():
        try:
            name, labels = json.loads(field)
            _COUNTERS[name].labels(**labels).inc(count)
        except (ValueError, TypeError, KeyError):
            continue  # a metric or label another version has: not ours to show


@dataclass(frozen=True)
class Labelled:
    """A family read from Redis with labels: its values by label values; `counter`: a
    count kept in Redis (one for every process and machine), else a gauge."""

    labels: tuple[str, ...]
    values: Mapping[tuple[str, ...], float]
    help: str = ""
    counter: bool = False


class StateCollector(Collector):
    """Families read from Redis at scrape time: dead letters, oldest age, SLA, paused,
    reviews."""

    def __init__(self, read: Callable[[], Mapping[str, float | Labelled]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        try:
            values = self._read()
        except Exception:  # noqa: BLE001
            values = {"redis_up": 0.0}  # a scrape must not fail because Redis is down
        for name, value in values.items():
            if not isinstance(value, Labelled):
                yield GaugeMetricFamily(f"optout_{name}", name.replace("_", " "), value=value)
                continue
            kind = CounterMetricFamily if value.counter else GaugeMetricFamily
            family = kind(f"optout_{name}", value.help or name.replace("_", " "),
                          labels=list(value.labels))  # fmt: skip
            for labels, number in sorted(value.values.items()):
                family.add_metric(list(labels), number)
            yield family


def process_registry() -> CollectorRegistry:
    """Every process on this machine (multiprocess mode), else just this one."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def render(extra: Collector | None = None) -> bytes:
    """The exposition text for /metrics: this machine's processes, plus `extra`."""
    text = generate_latest(process_registry())
    if extra is not None:
        own = CollectorRegistry()
        own.register(extra)
        text += generate_latest(own)
    return text


def serve(port: int) -> None:
    """Expose this machine's metrics on a port of their own (workers have no HTTP server)."""
    start_http_server(port, registry=process_registry())
