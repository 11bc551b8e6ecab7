"""The Redis failover drill: opt-outs through the API while Sentinel replaces a killed primary.

One primary, two replicas and three Sentinels on loopback (tests/sentinel_cluster.py), AOF
always and `min-replicas-to-write 1` on every node; `optout api` and `optout worker --beat` as
processes of their own, configured with the Sentinels only, `OPTOUT_REDIS_WAIT_REPLICAS=1`;
senders POST one number a request and retry whatever is not 2xx. Mid-run the primary is
`kill -9`ed, later the new primary's one replica while the old primary is still down (no replica
left: nothing may be answered 2xx), then both come back; then the primary is killed again while
the first-listed Sentinel is hung (SIGSTOP). Passes when every number answered 2xx is blocked
in the new primary's ledger and listed at every provider, nothing is stale, and no process
needed a restart. Run from tests/chaos/drills.py (`--drill sentinel_failover`, `--drill
sentinel_failover_rabbitmq`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from config import load_settings
from tests.chaos.drills import ROOT, Lab, Result
from tests.rabbitmq import RABBIT, delete_queues, rabbit_up
from tests.sentinel_cluster import SentinelCluster
from worker.runtime.celery_app import queue_names
from worker.runtime.embedded import free_port

TOKEN = "drill-admin-token"
#: Senders: each posts its share of the numbers one at a time, as a telephony platform would.
SENDERS = 4


@dataclass
class Stream:
    """What the senders saw: the numbers answered 2xx and when, and every refusal."""

    acked: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # status or error -> count
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, status
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Senders wait once this many are answered, until `go`: the last faults need a cluster
    #: back in shape and numbers still to send.
    hold_at: int | None = None
    go: threading.Event = field(default_factory=threading.Event)

    def wait_turn(self, stop: threading.Event) -> None:
        while (self.hold_at is not None and len(self.acked) >= self.hold_at
               and not self.go.is_set() and not stop.is_set()):  # fmt: skip
            self.go.wait(0.1)

    def note(self, start: float, status: int, what: str, phone: str | None = None) -> None:
        with self.lock:
            self.answers.append((start, time.monotonic(), status))
            if phone is not None:
                self.acked.append(phone)
            else:
                self.refused[what] = self.refused.get(what, 0) + 1

    def recovered_after(self, fault: float) -> float | None:
        """Seconds from the fault to the first 2xx for a request sent after it."""
        with self.lock:
            ends = [end for start, end, status in self.answers if start >= fault and status < 300]
        return min(ends) - fault if ends else None

    def successes_within(self, start: float, end: float) -> int:
        """2xx answers to requests sent and answered between `start` and `end`."""
        with self.lock:
            return sum(1 for s, e, status in self.answers if start <= s and e <= end
                       and status < 300)  # fmt: skip

    def longest(self) -> float:
        """The longest a sender waited for one answer, whatever it was."""
        with self.lock:
            return max((end - start for start, end, _ in self.answers), default=0.0)

    def refusals_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for s, _e, status in self.answers if start <= s < end and status >= 300)


def send(url: str, phones: list[str], stream: Stream, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        for phone in phones:
            stream.wait_turn(stop)
            while not stop.is_set():
                start = time.monotonic()
                try:
                    answer = client.post("/v1/optouts", json={"action": "add", "phones": [phone]})
                except httpx.HTTPError as exc:
                    stream.note(start, 599, type(exc).__name__)
                    time.sleep(0.1)
                    continue
                if answer.is_success:
                    stream.note(start, answer.status_code, "", phone)
                    time.sleep(0.01)  # a steady stream, not a flood: it must span the faults
                    break
                stream.note(start, answer.status_code, str(answer.status_code))
                time.sleep(0.1)  # what a sender does on 503: try again shortly


def start_api(lab: Lab, port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "worker.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(args, env={**os.environ, **lab.env}, cwd=ROOT,
                               stdout=(lab.workdir / "api.log").open("ab"),
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    lab.workers.append(process)  # stopped with the lab's workers
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"the API did not start: see {lab.workdir / 'api.log'}")


def wait_for(acked: Stream, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(acked.acked) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def drill_sentinel_failover(workdir: Path, numbers: int, rabbitmq: bool = False) -> Result:
    """kill -9 the primary mid-stream (it comes back as a replica), later a replica, then
    the primary again with the first Sentinel hung."""
    result = Result("sentinel failover" + (", RabbitMQ broker" if rabbitmq else ""))
    if rabbitmq and not rabbit_up():
        result.problems.append(f"RabbitMQ does not answer at {RABBIT}")
        return result
    with ExitStack() as stack:
        # As README, High availability, sets it up: `min-replicas-to-write 1`, so every pop of
        # a Redis broker is refused while no replica is left (what once stalled a worker for
        # good; broker.Poller).
        cluster = stack.enter_context(
            SentinelCluster(workdir / "ha", password="node-secret",
                            sentinel_password="sentinel-secret", min_replicas_to_write=1)
        )  # fmt: skip
        env = {
            "REDIS_URL": "",
            "OPTOUT_REDIS_SENTINELS": cluster.sentinel_setting,
            "OPTOUT_REDIS_SENTINEL_MASTER": cluster.master_name,
            "OPTOUT_REDIS_PASSWORD": "node-secret",
            "OPTOUT_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
            "OPTOUT_REDIS_WAIT_REPLICAS": "1",
            "OPTOUT_REDIS_WAIT_TIMEOUT_MS": "2000",
            "OPTOUT_ADMIN_TOKEN": TOKEN,
        }
        if rabbitmq:
            env["CELERY_BROKER_URL"] = RABBIT
            env["OPTOUT_QUEUE_NAMESPACE"] = f"drill-{uuid.uuid4().hex[:8]}."
            stack.callback(delete_queues, queue_names(load_settings(env)))
        lab = Lab(stack, "", workdir, **env)
        worker = lab.start_worker(beat=True)
        port = free_port()
        api = start_api(lab, port)
        phones = [f"+97257{i:07d}" for i in range(numbers)]
        stream, stop = Stream(hold_at=3 * numbers // 4), threading.Event()
        senders = [threading.Thread(target=send, args=(f"http://127.0.0.1:{port}",
                                                       phones[k::SENDERS], stream, stop))
                   for k in range(SENDERS)]  # fmt: skip
        for sender in senders:
            sender.start()
        stack.callback(stop.set)
        stack.callback(stream.go.set)

        wait_for(stream, numbers // 4, 120)
        old = cluster.primary()
        was_primary = cluster.node_at(old)
        cluster.kill(was_primary)  # returns once it is dead: nothing later is on it
        primary_fault = time.monotonic()
        failover = cluster.wait_failover(old, timeout=60)
        first_new = cluster.primary()

        # The new primary's one replica next, while the old primary is still down: no replica
        # is left to take a write, so nothing may be answered 2xx until one is back.
        wait_for(stream, numbers // 2, 120)
        (replica,) = cluster.replica_nodes()
        cluster.kill(replica)
        replica_fault = time.monotonic()
        time.sleep(2.0)
        replica_back = time.monotonic()
        cluster.restart(replica)
        cluster.restart(was_primary)  # back as a replica of the new primary

        # The primary killed a second time, with the first-listed Sentinel hung (SIGSTOP: it
        # takes connections and never answers, so every client's discovery has to time out
        # on it and ask the next); the other two elect and promote.
        wait_for(stream, 3 * numbers // 4, 120)
        cluster.wait_ready(60)
        cluster.pause_sentinel(0)
        second = cluster.primary()
        stream.go.set()
        wait_for(stream, 3 * numbers // 4 + 2 * SENDERS, 60)
        cluster.kill(cluster.node_at(second))
        second_fault = time.monotonic()
        second_failover = cluster.wait_failover(second, timeout=60)
        # Some answers from the newest primary while the Sentinel is still hung.
        wait_for(stream, min(numbers, len(stream.acked) + SENDERS), 60)
        # Back as a replica first (the primary it is told is the live Sentinels'), then the
        # hung Sentinel: for a moment it still names the dead primary, now a replica.
        cluster.restart(cluster.node_at(second))
        cluster.resume_sentinel(0)

        for sender in senders:
            sender.join(timeout=300)
        fed = time.monotonic()
        if len(stream.acked) < numbers:
            result.problems.append(f"only {len(stream.acked)} of {numbers} were answered 2xx")
        result.accepted = len(stream.acked)

        recovered = stream.recovered_after(primary_fault)
        rejoined = stream.recovered_after(replica_back)
        again = stream.recovered_after(second_fault)
        refused = ", ".join(f"{n} x {what}" for what, n in sorted(stream.refused.items()))
        result.notes.append(
            f"primary {old[0]}:{old[1]} killed; Sentinel named {first_new[1]} after "
            f"{failover:.1f} s; first 2xx after {recovered or 0:.1f} s"
        )
        result.notes.append(
            f"refused while the primary was away: "
            f"{stream.refusals_between(primary_fault, replica_fault)}; with no replica: "
            f"{stream.refusals_between(replica_fault, second_fault)}, first 2xx "
            f"{rejoined or 0:.1f} s after its restart began ({refused or 'none'}); longest "
            f"answer {stream.longest():.1f} s"
        )
        result.notes.append(
            f"primary {second[0]}:{second[1]} killed too, the first Sentinel hung: the next "
            f"named after {second_failover:.1f} s; first 2xx after {again or 0:.1f} s; refused "
            f"{stream.refusals_between(second_fault, fed)}"
        )
        if recovered is None or rejoined is None or again is None:
            result.problems.append("no 2xx after a fault")
        if early := stream.successes_within(replica_fault, replica_back):
            result.problems.append(f"{early} answered 2xx while no replica could have it")

        missing = [n for n in stream.acked if lab.ctx.store.ledger(n).get("s") != "blocked"]
        result.notes.append(f"answered 2xx, then missing from the new primary: {len(missing)}")
        result.lost += len(missing)
        if not lab.wait_settled(180):
            result.problems.append("did not settle in 180 s")
        for name, process in (("worker", worker), ("API", api)):
            if process.poll() is not None:
                result.problems.append(f"the {name} exited ({process.returncode}): a failover "
                                       "must not need a restart")  # fmt: skip
        return lab.compare(result, stream.acked)
