"""The outbound benchmark's work: replies recorded through the store as the web process
records them, enqueued as send jobs (or no-op jobs, the baseline), and drained while the
finished ones are counted."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.corpus import BUSINESS_NUMBER, contact_address
from bench.data import bench_store
from bench.workerprocs import CpuWatch, Workers
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.tickets import EventType
from bridge.jobs import QUEUE_OUTBOUND, JobQueues

NOOP = "bench.outbound_driver.noop"


def noop(payload: dict[str, Any]) -> None:
    """The baseline job: RQ's own cost, nothing else."""


# ------------------------------------------------------------------ events


def body_for(n: int) -> str:
    """The reply to customer n; its text names the event."""
    return f"Bonjour, votre commande est partie ce matin (réponse #{n})."


def event_of(body: str) -> int | None:
    _, sep, tail = body.rpartition("(réponse #")
    if not sep or not tail.endswith(").") or not tail[:-2].isdigit():
        return None
    return int(tail[:-2])


async def make_events(url: str, count: int, run: str, concurrency: int = 32
                      ) -> list[tuple[str, str]]:
    """One WhatsApp customer per reply: their message routed now (the window is open), then
    alice's reply on the ticket. [(ticket id, event id)], reply n to customer n."""
    client = redis.asyncio.Redis.from_url(url)
    store = bench_store(client)
    sem = asyncio.Semaphore(concurrency)
    out: list[tuple[str, str]] = [("", "")] * count

    async def one(n: int) -> None:
        now = int(time.time() * 1000)
        async with sem:
            routed = await store.route_inbound(
                InboundMessage(channel=Channel.WHATSAPP, provider_id=f"SM{run:0>4.4}{n:028x}",
                               contact_address=contact_address(n), received_at_ms=now,
                               body=f"Bonjour, où en est ma commande ? ({n})",
                               to=BUSINESS_NUMBER),
                RatingSignal(), ChannelPolicy(), now_ms=now)
            if not routed.ticket_id:
                raise RuntimeError(f"customer {n}'s message opened no ticket: {routed}")
            _, eid = await store.update_ticket(
                routed.ticket_id, author="alice", now_ms=now,
                event=(EventType.AGENT_REPLY, body_for(n), {}))
            if not eid:
                raise RuntimeError(f"no reply event recorded on ticket {routed.ticket_id}")
            out[n] = (routed.ticket_id, eid)

    try:
        await asyncio.gather(*(one(n) for n in range(count)))
    finally:
        await client.aclose()
    return out


async def _deliveries(url: str, events: list[tuple[str, str]]) -> list[dict[str, str]]:
    client = redis.asyncio.Redis.from_url(url)
    store = bench_store(client)
    try:
        out = []
        for start in range(0, len(events), 32):  # within the pool's connections
            out += await asyncio.gather(*(store.delivery_state(tid, eid)
                                          for tid, eid in events[start:start + 32]))
        return out
    finally:
        await client.aclose()


def deliveries(url: str, events: list[tuple[str, str]]) -> list[dict[str, str]]:
    return asyncio.run(_deliveries(url, events))


# ------------------------------------------------------------------ draining


@dataclass
class Drain:
    """Finished-job counts sampled while a batch of jobs runs."""

    jobs: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    complete: bool = False
    window_s: float = 0.0
    cpu_percent: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def when(self, count: float) -> float:
        """Seconds after the start when `count` jobs had finished (interpolated)."""
        for (t0, c0), (t1, c1) in zip(self.samples, self.samples[1:], strict=False):
            if c1 >= count:
                return t0 + (t1 - t0) * ((count - c0) / (c1 - c0) if c1 > c0 else 1.0)
        return math.nan

    def rate(self, lo: float = 0.1, hi: float = 0.9) -> float:
        """Jobs per second between lo and hi of the batch finished."""
        a, b = self.when(lo * self.jobs), self.when(hi * self.jobs)
        return (hi - lo) * self.jobs / (b - a) if b > a else math.nan

    def cpu_ms_per_job(self, label: str) -> float:
        done = self.samples[-1][1] if self.samples else 0
        return 1000 * self.cpu_s.get(label, math.nan) / done if done else math.nan


class Driver:
    """Enqueues batches and waits for them (finished registry of the outbound queue)."""

    def __init__(self, conn: redis.Redis, workers: Workers, watch: CpuWatch, *,
                 timeout_s: float, poll_s: float) -> None:
        self.conn = conn
        self.workers = workers
        self.watch = watch
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.queues = JobQueues(conn)
        self.finished = FinishedJobRegistry(QUEUE_OUTBOUND, connection=conn,
                                            serializer=JSONSerializer)
        self.failed = FailedJobRegistry(QUEUE_OUTBOUND, connection=conn,
                                        serializer=JSONSerializer)
        self.raw = Queue(QUEUE_OUTBOUND, connection=conn, serializer=JSONSerializer)

    def noops(self, n: int) -> None:
        for start in range(0, n, 500):
            with self.conn.pipeline() as pipe:
                self.raw.enqueue_many(
                    [Queue.prepare_data(NOOP, ({"n": i},), result_ttl=600)
                     for i in range(start, min(n, start + 500))], pipeline=pipe)
                pipe.execute()

    def sends(self, batch: list[tuple[str, str]]) -> None:
        for tid, eid in batch:
            self.queues.send_outbound(tid, eid)

    def drain(self, jobs: int, enqueue: Callable[[], None], *, timeout_s: float | None = None,
              watch: bool = True) -> Drain:
        """Run `enqueue` (which adds `jobs` jobs), then sample until they have all finished
        or failed, a worker exited, or time is up."""
        out = Drain(jobs)
        done0, failed0 = self.finished.count, self.failed.count
        if watch:
            self.watch.begin()
        t0 = time.perf_counter()
        out.samples.append((0.0, 0))
        enqueue()
        timeout = timeout_s or self.timeout_s
        poll = self.poll_s
        for _ in range(int(timeout / poll) + 10):
            done = self.finished.count - done0
            failed = self.failed.count - failed0
            elapsed = time.perf_counter() - t0
            out.samples.append((elapsed, done))
            if done + failed >= jobs:
                out.complete = done >= jobs
                break
            if elapsed > timeout or not self.workers.alive():
                break
            time.sleep(poll)
        if watch:
            out.window_s, out.cpu_percent, out.cpu_s = self.watch.end()
        return out
