"""Relay: change log entries handed on to RQ jobs by `python -m workers.relay` (the
transactional outbox's other half, DESIGN §9).

Set-up: an embedded Redis with AOF on (as in production) and one relay process started as
`make run` starts it; no worker, so the jobs stay in their queue to be counted. When the
machine has two or more CPUs the relay runs alone on the first one, and Redis and this
process (the writer) share the others.

The changes are written with XADD in the very format route.lua writes for a message that
opens a ticket (`routed`, action `new_ticket`: one ticket.created trigger job each), one
contact each, so they spread over the 256 partitions as real contacts do
(tests/test_bench_smoke.py checks the format against TicketStore.route_inbound's entry).

Phases, bounded in count and in time:
1. throughput: `rounds` backlogs of `backlog` changes, written as fast as pipelines allow
   while the relay runs; timed from the first write to the moment the queue holds every
   job. The baseline: the same jobs enqueued by JobQueues.enqueue_many directly (what RQ
   itself costs), in batches of the relay's size;
2. latency: changes written one by one at a steady `rate` for `steady_s`; per change, from
   its commit (the log entry's id: Redis's clock, in ms) to the job's enqueued_at (RQ's
   record, set by the relay as it enqueues the job);
3. correctness: every change gave exactly one job.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis

from bench.corpus import contact_address
from bench.cpuwatch import ProcessCpu
from bench.data import CONTACT_KEY
from bench.procs import Background, cpu_layout, own_affinity, python_module
from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bridge.core.changes import TriggerName
from bridge.core.messages import Channel, contact_id_for
from bridge.jobs import QUEUE_EVENTS, JobQueues, JobSpec, trigger_job
from bridge.store import keys
from bridge.store.changelog import RELAY_CONSUMER
from bridge.store.embedded import EmbeddedRedis
from config.settings import DEFAULT_CONFIG_DIR

P99_TARGET_MS = 1000.0  # the webhook export's bar (DESIGN): p99 < 1 s from commit
PIPELINE_CHUNK = 1000  # XADDs per round trip when writing a backlog
# Jobs a JobQueues.enqueue_many call in the baseline (in transactions of ENQUEUE_CHUNK).
RELAY_BATCH = 500


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    backlog: int = 50_000  # changes per throughput round
    rounds: int = 3
    rate: float = 200.0  # changes/s, latency phase
    steady_s: float = 10.0
    timeout_s: float = 120.0  # per phase: the relay must have handed everything on by then


SMOKE = RelayConfig(backlog=600, rounds=1, rate=50.0, steady_s=1.0, timeout_s=30.0)
QUICK = RelayConfig(backlog=20_000, rounds=2, steady_s=5.0)


@dataclass(frozen=True)
class Change:
    """One change log entry to write, and the job the relay should make of it."""

    stream: str
    fields: dict[str, str]
    job: JobSpec


def new_ticket_change(contact: int, ticket: int) -> Change:
    """What route.lua writes when a message from a new contact opens ticket `ticket`."""
    cid = contact_id_for(CONTACT_KEY.encode(), Channel.WHATSAPP, contact_address(contact))
    created_at_ms = 1_700_000_000_000 + ticket
    event_id = f"{created_at_ms}-0"
    fields = {"k": "routed", "t": str(ticket), "c": cid, "a": "new_ticket", "e": event_id,
              "ch": Channel.WHATSAPP.value, "ca": str(created_at_ms)}
    return Change(keys.change_log_of(cid), fields,
                  trigger_job(str(ticket), TriggerName.CREATED.value, 0, event_id))


class _Writer:
    def __init__(self, client: redis.Redis, queues: JobQueues) -> None:
        self.client = client
        self.queues = queues
        self.queue_key = queues.queues[QUEUE_EVENTS].key
        self.next_contact = 0

    def changes(self, n: int) -> list[Change]:
        first = self.next_contact
        self.next_contact += n
        return [new_ticket_change(c, 1_000_000 + c) for c in range(first, first + n)]

    def empty_queue(self) -> None:
        self.queues.queues[QUEUE_EVENTS].empty()  # type: ignore[no-untyped-call]

    def queued(self) -> int:
        return int(self.client.llen(self.queue_key))

    def wait_queued(self, n: int, timeout_s: float, relay: Background) -> float:
        """perf_counter time when the queue first held n jobs."""
        deadline = time.perf_counter() + timeout_s
        while (count := self.queued()) < n:
            if time.perf_counter() > deadline:
                relay.check_running()
                raise RuntimeError(f"relay: {count} of {n} jobs after {timeout_s:g} s")
            time.sleep(0.002)
        return time.perf_counter()


@dataclass(frozen=True)
class Drain:
    changes: int
    write_s: float  # the writer's own time for the backlog
    total_s: float  # first write -> every job in the queue
    relay_cpu_s: float

    @property
    def rate(self) -> float:
        return self.changes / self.total_s


@dataclass(frozen=True)
class Outcome:
    drains: list[Drain]
    direct_rates: list[float]  # the baseline: enqueue_many alone, jobs/s
    latency_ms: dict[str, float]
    steady_rate: float  # offered
    steady_written_s: float
    jobs: int  # jobs counted in the queue, every phase
    changes: int  # changes written, every phase
    layout: str


def _drain(w: _Writer, relay: Background, n: int, timeout_s: float) -> Drain:
    w.empty_queue()
    changes = w.changes(n)
    cpu = ProcessCpu({"relay": relay.pid})
    t0 = time.perf_counter()
    cpu.begin()
    for i in range(0, n, PIPELINE_CHUNK):
        with w.client.pipeline(transaction=False) as pipe:
            for ch in changes[i:i + PIPELINE_CHUNK]:
                pipe.xadd(ch.stream, ch.fields)
            pipe.execute()
    written = time.perf_counter()
    done = w.wait_queued(n, timeout_s, relay)
    relay_cpu = cpu.end().get("relay", float("nan")) / 100 * (done - t0)
    return Drain(n, written - t0, done - t0, relay_cpu)


def _direct(w: _Writer, n: int) -> float:
    """jobs/s of JobQueues.enqueue_many alone on the same jobs, in the relay's batch size."""
    w.empty_queue()
    specs = [c.job for c in w.changes(n)]
    t0 = time.perf_counter()
    for i in range(0, n, RELAY_BATCH):
        w.queues.enqueue_many(specs[i:i + RELAY_BATCH])
    return n / (time.perf_counter() - t0)


def _steady(w: _Writer, relay: Background, cfg: RelayConfig) -> tuple[list[float], float]:
    """Latencies (s) from commit to enqueued_at at a constant offered rate."""
    w.empty_queue()
    changes = w.changes(max(1, int(cfg.rate * cfg.steady_s)))
    committed_ms: list[int] = []
    start = time.perf_counter() + 0.05
    for i, ch in enumerate(changes):
        delay = start + i / cfg.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        entry_id = w.client.xadd(ch.stream, ch.fields)
        committed_ms.append(int(str(entry_id.decode()).split("-")[0]))
    written_s = time.perf_counter() - start
    w.wait_queued(len(changes), cfg.timeout_s, relay)
    with w.client.pipeline(transaction=False) as pipe:
        for ch in changes:
            pipe.hget(f"rq:job:{ch.job.job_id}", "enqueued_at")
        stamps = pipe.execute()
    latencies = []
    for at_ms, stamp in zip(committed_ms, stamps, strict=True):
        if stamp is None:
            raise RuntimeError("relay: a job has no enqueued_at")
        enqueued = datetime.fromisoformat(stamp.decode()).timestamp()
        latencies.append(enqueued - at_ms / 1000)
    return latencies, written_s


def _config_with_a_created_rule(workdir: Path) -> Path:
    """The shipped rules plus one on ticket.created: with the shipped ones a new ticket's
    change needs no job (the relay skips it), and this benchmark times changes to jobs."""
    config = workdir / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.py", "__*"))
    with (config / "automations.toml").open("a") as rules:
        rules.write('\n[[triggers]]\nname = "bench_on_created"\non = ["ticket.created"]\n'
                    'when = { status = ["new"] }\nthen = { add_tags = ["bench"] }\n')
    return config


def measure(cfg: RelayConfig, workdir: Path, *, pin: bool = True,
            log: Callable[[str], None] = print) -> Outcome:
    layout_cpus = cpu_layout() if pin else None
    relay_cpus, other_cpus = layout_cpus if layout_cpus else (None, None)
    layout = (f"relay on CPU {relay_cpus}, Redis and the writer on CPU {other_cpus}"
              if layout_cpus else "no CPU pinning")
    workdir.mkdir(parents=True, exist_ok=True)
    with own_affinity(other_cpus), EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        env = {"REDIS_URL": rds.url, "BRIDGE_DATA_DIR": str(workdir / "var"),
               "BRIDGE_CONTACT_KEY": CONTACT_KEY, "PATH": "/usr/bin:/bin",
               "BRIDGE_CONFIG_DIR": str(_config_with_a_created_rule(workdir))}
        client = redis.Redis.from_url(rds.url)
        w = _Writer(client, JobQueues(client))
        relay = Background("relay", python_module("workers.relay"),
                           log_path=workdir / "relay.log", env=env)
        try:
            with relay:
                relay.start(cpus=relay_cpus)
                deadline = time.monotonic() + 30
                # It reads the log once it holds the lease.
                while not client.exists(keys.relay_lease(RELAY_CONSUMER)):
                    relay.check_running()
                    if time.monotonic() > deadline:
                        raise RuntimeError("relay did not take its lease in 30 s")
                    time.sleep(0.05)
                drains, direct = [], []
                for i in range(cfg.rounds):
                    d = _drain(w, relay, cfg.backlog, cfg.timeout_s)
                    direct.append(_direct(w, cfg.backlog))
                    drains.append(d)
                    log(f"  relay: round {i + 1}/{cfg.rounds}: {d.rate:,.0f} changes/s "
                        f"(backlog written in {d.write_s:.2f} s, drained in {d.total_s:.2f} s); "
                        f"enqueue_many alone {direct[-1]:,.0f} jobs/s")
                latencies, written_s = _steady(w, relay, cfg)
                summary = summary_ms(latencies)
                log(f"  relay: {cfg.rate:g} changes/s for {cfg.steady_s:g} s: p50 "
                    f"{summary['p50']:.1f} ms, p99 {summary['p99']:.1f} ms")
                jobs = sum(d.changes for d in drains) + len(latencies)
                changes = w.next_contact - cfg.backlog * cfg.rounds  # the direct ones made none
        finally:
            client.close()
    return Outcome(drains=drains, direct_rates=direct, latency_ms=summary,
                   steady_rate=cfg.rate, steady_written_s=written_s, jobs=jobs,
                   changes=changes, layout=layout)


def rows(o: Outcome) -> list[Row]:
    best = max(o.drains, key=lambda d: d.rate)
    cpu_us = [d.relay_cpu_s / d.changes * 1e6 for d in o.drains]
    return [
        Row(bench="relay",
            name=f"change log entries/s handed on to RQ jobs (backlog of {best.changes:,} "
                 "new-ticket changes, best of rounds)",
            value=best.rate, unit="changes/s", baseline=max(o.direct_rates),
            baseline_name="JobQueues.enqueue_many alone, same jobs, batches of "
                          f"{RELAY_BATCH}"),
        Row(bench="relay", name="relay CPU time per change (median of rounds)",
            value=sorted(cpu_us)[len(cpu_us) // 2], unit="µs"),
        Row(bench="relay",
            name=f"p50 commit → job enqueued, {o.steady_rate:g} changes/s offered",
            value=o.latency_ms["p50"], unit="ms"),
        Row(bench="relay",
            name=f"p99 commit → job enqueued, {o.steady_rate:g} changes/s offered",
            value=o.latency_ms["p99"], unit="ms",
            target=Target(op="<", threshold=P99_TARGET_MS)),
        Row(bench="relay", name="trigger jobs enqueued vs changes written",
            value=o.jobs, unit="jobs", baseline=o.changes, baseline_name="changes written",
            target=Target(op="==", threshold=1.0, on="ratio")),
    ]


def sections(ctx: Context, o: Outcome, cfg: RelayConfig) -> None:
    lines = [[str(i), f"{d.changes:,}", f"{d.write_s:.2f}", f"{d.total_s:.2f}",
              f"{d.rate:,.0f}", fmt(d.relay_cpu_s / d.total_s * 100) + "%",
              f"{r:,.0f}"]
             for i, (d, r) in enumerate(zip(o.drains, o.direct_rates, strict=True), 1)]
    lat = o.latency_ms
    text = [
        f"One `python -m workers.relay` as `make run` starts it, {o.layout}; no worker (the "
        "jobs stay queued to be counted). Each change is the entry route.lua writes when a "
        "message from a new contact opens a ticket (one ticket.created trigger job), one "
        "contact per change, spread over the 256 partitions. Throughput: a backlog written "
        "with pipelined XADDs while the relay runs, timed from the first write until the "
        "queue holds every job; the baseline enqueues the same jobs with "
        f"JobQueues.enqueue_many directly, {RELAY_BATCH} a call.",
        "",
        table(["Round", "changes", "written in s", "all jobs queued after s", "changes/s",
               "relay CPU", "enqueue_many alone, jobs/s"], lines),
        "",
        f"Latency: {o.steady_rate:g} changes/s offered one by one for {cfg.steady_s:g} s "
        f"(written in {o.steady_written_s:.1f} s), from each change's commit (its log "
        "entry id, Redis's clock, whole ms, so up to 1 ms is added) to its job's "
        "`enqueued_at` (RQ's record, set by the relay as it enqueues): "
        f"p50 {fmt(lat['p50'])} ms, p90 {fmt(lat['p90'])} ms, p99 {fmt(lat['p99'])} ms, "
        f"max {fmt(lat['max'])} ms over {int(lat['n']):,} changes. Target: the webhook "
        f"export's bar, p99 < {P99_TARGET_MS / 1000:g} s.",
    ]
    ctx.add_section("Relay details", "\n".join(text))


def run(ctx: Context, cfg: RelayConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else RelayConfig())
    outcome = measure(cfg, ctx.workdir / "relay", pin=ctx.pin_cpus, log=ctx.log)
    sections(ctx, outcome, cfg)
    return rows(outcome)
