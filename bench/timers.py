"""Timers: how late a solved-to-closed automation fires with 100,000 timers pending
(DESIGN §8: within 5 s of its due time), against the same timers with none pending.

Set-up: an embedded Redis with AOF on, one real `python -m workers` process (the Procfile's
worker: RQ's scheduler moves due jobs from the housekeeping queue's ScheduledJobRegistry to
the queue every second, and the worker runs them).

Each round schedules K real WhatsApp tickets' close timers: each ticket was solved just
under an hour ago, so the shipped rule `close_solved_whatsapp` (1 h after solved) is due a
few seconds from now; the timer is set by `workers.automations.schedule_timer`, the code the
worker itself uses (same payload, job id `timer-<ticket>-<automation>-<anchor>`). The due
times are spread `spacing_ms` apart, so that they fall at different moments of the
scheduler's one-second loop. Lateness = when the ticket's status_changed → closed event was
written (its Redis stream id: the server's clock) minus its due time.

1. baseline: a round with an empty registry (no other timer pending);
2. 100,000 more RUN_TIMER jobs are scheduled far in the future (RQ's own enqueue_at,
   pipelined in chunks), real `close_solved` timers of 4-day-old tickets spread over the
   next four days;
3. the same round again with those 100,000 pending.
Correctness: every ticket closed exactly once, the 100,000 still pending and untouched, no
failed job.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from bench.corpus import BUSINESS_NUMBER, contact_address
from bench.data import CONTACT_KEY, bench_store
from bench.report import Context, Row, Target, fmt, table
from bench.stats import percentile
from bench.workerprocs import CpuWatch, WorkerMode, Workers
from bridge import jobs
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.rule_model import Automation
from bridge.core.rule_parsing import load_config
from bridge.core.tickets import EventType, Status
from bridge.jobs import QUEUE_HOUSEKEEPING, JobQueues
from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis
from bridge.store.macros import MacroStore, load_shipped
from config.settings import DEFAULT_CONFIG_DIR
from workers.automations import Deps, schedule_timer

AUTOMATION = "close_solved_whatsapp"  # shipped: close a WhatsApp ticket 1 h after solved
FAR_AUTOMATION = "close_solved"  # shipped: 4 days after solved
TARGET_S = 5.0
SCHEDULER_LOCK = f"rq:scheduler-lock:{QUEUE_HOUSEKEEPING}"


@dataclass(frozen=True, kw_only=True)
class TimersConfig:
    pending: int = 100_000
    timers: int = 20  # K, per round
    due_in_s: float = 3.0  # the first timer of a round, from when the round starts
    spacing_ms: int = 130  # between due times (spread over the scheduler's 1 s loop)
    chunk: int = 2_000  # scheduled jobs per pipeline
    timeout_s: float = 30.0  # after the last due time
    processes: int = 1
    mode: WorkerMode = "fork"  # `python -m workers` as the Procfile runs it


SMOKE = TimersConfig(pending=500, timers=3, due_in_s=2.0, spacing_ms=200)
QUICK = TimersConfig(pending=20_000, timers=10)


@dataclass(frozen=True)
class Fired:
    ticket_id: str
    due_ms: int
    written_ms: int  # the closing event's stream id: Redis's clock when it was written
    recorded_ms: int  # the event's at_ms (the worker's `now`, never before the due time)
    closings: int

    @property
    def late_s(self) -> float:
        return (self.written_ms - self.due_ms) / 1000


@dataclass(frozen=True)
class Round:
    pending: int  # other timers in the registry during the round
    fired: list[Fired]
    unfired: int
    window_s: float
    cpu_percent: dict[str, float]

    def late(self, q: float) -> float:
        values = sorted(f.late_s for f in self.fired)
        return percentile(values, q) if values else math.nan

    @property
    def max_late(self) -> float:
        return max((f.late_s for f in self.fired), default=math.nan)

    @property
    def early(self) -> int:
        return sum(f.late_s < 0 for f in self.fired)


@dataclass(frozen=True)
class Outcome:
    cfg: TimersConfig
    baseline: Round
    loaded: Round
    bulk_s: float  # scheduling the 100,000
    bulk_bytes: int  # Redis used_memory they added
    pending_after: int  # far-future jobs still in the registry at the end
    failed_jobs: int


def _automation(name: str) -> Automation:
    found = load_config(DEFAULT_CONFIG_DIR / "automations.toml").automation(name)
    if found is None or not found.enabled:
        raise RuntimeError(f"the shipped automation {name!r} is missing or disabled")
    return found


async def _solved_round(url: str, conn: redis.Redis, first: int, cfg: TimersConfig,
                        run: str) -> list[tuple[str, int]]:
    """K WhatsApp tickets solved just under an hour ago, their close timers set by
    workers.automations.schedule_timer. [(ticket id, due ms)]."""
    client = redis.asyncio.Redis.from_url(url)
    store = bench_store(client)
    deps = Deps(store=store, macros=MacroStore(client, load_shipped()), queues=JobQueues(conn),
                config=load_config(DEFAULT_CONFIG_DIR / "automations.toml"))
    automation = _automation(AUTOMATION)
    out: list[tuple[str, int]] = []
    start = int(time.time() * 1000) + int(cfg.due_in_s * 1000)
    try:
        for i in range(cfg.timers):
            n = first + i
            due = start + i * cfg.spacing_ms
            solved_at = due - automation.after_s * 1000
            routed = await store.route_inbound(
                InboundMessage(channel=Channel.WHATSAPP, provider_id=f"SM{run:0>4.4}{n:028x}",
                               contact_address=contact_address(n),
                               received_at_ms=solved_at - 60_000, body="Merci, c'est réglé !",
                               to=BUSINESS_NUMBER),
                RatingSignal(), ChannelPolicy(), now_ms=solved_at - 60_000)
            if not routed.ticket_id:
                raise RuntimeError(f"customer {n}'s message opened no ticket")
            ticket, _ = await store.update_ticket(routed.ticket_id, author="alice",
                                                  now_ms=solved_at, status=Status.SOLVED)
            if automation.due_ms(ticket) != due or not automation.should_schedule(ticket):
                raise RuntimeError(f"ticket {ticket.id}: {AUTOMATION} would not be due at {due}")
            await schedule_timer(deps, automation, ticket)
            out.append((ticket.id, due))
    finally:
        await client.aclose()
    return out


async def _closings(url: str, tickets: list[tuple[str, int]]) -> list[Fired | None]:
    client = redis.asyncio.Redis.from_url(url)
    store = bench_store(client)
    out: list[Fired | None] = []
    try:
        for tid, due in tickets:
            cid = await store.contact_of(tid)
            closed = [(eid, fields) for eid, fields in await client.xrange(keys.events(cid, tid))
                      if fields[b"type"] == EventType.STATUS_CHANGED.value.encode()
                      and json.loads(fields[b"data"]).get("to") == Status.CLOSED.value]
            if not closed:
                out.append(None)
                continue
            eid, fields = closed[0]
            out.append(Fired(tid, due, int(eid.split(b"-")[0]), int(fields[b"at_ms"]),
                             len(closed)))
    finally:
        await client.aclose()
    return out


def bulk_schedule(conn: redis.Redis, count: int, chunk: int, first_ticket: int) -> None:
    """`count` real RUN_TIMER jobs (RQ's enqueue_at, pipelined), due between 10 minutes and 4
    days from now: the close_solved timers of tickets that do not need to exist (if one ever
    ran it would find no ticket and do nothing)."""
    queue = JobQueues(conn).queues[QUEUE_HOUSEKEEPING]
    automation = _automation(FAR_AUTOMATION)
    now = int(time.time() * 1000)
    horizon = automation.after_s * 1000
    for start in range(0, count, chunk):
        with conn.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + chunk)):
                due = now + 600_000 + (horizon - 600_000) * n // count
                anchor = due - horizon
                tid = str(first_ticket + n)
                queue.enqueue_at(
                    datetime.fromtimestamp(due / 1000, tz=UTC), jobs.RUN_TIMER,
                    {"ticket_id": tid, "automation": FAR_AUTOMATION, "version": 3,
                     "anchor_ms": anchor, "due_ms": due},
                    job_id=jobs.job_id("timer", tid, FAR_AUTOMATION, str(anchor)),
                    failure_ttl=30 * 24 * 3600, pipeline=pipe)
            pipe.execute()


def _round(url: str, conn: redis.Redis, workers: Workers, watch: CpuWatch, first: int,
           cfg: TimersConfig, pending: int, run: str, log: Callable[[str], None]) -> Round:
    watch.begin()
    tickets = asyncio.run(_solved_round(url, conn, first, cfg, run))
    last_due = max(due for _, due in tickets) / 1000
    deadline = last_due + cfg.timeout_s
    fired: list[Fired | None] = []
    for _ in range(int((deadline - time.time()) / 0.2) + 10):
        fired = asyncio.run(_closings(url, tickets))
        if all(f is not None for f in fired) or time.time() > deadline:
            break
        if not workers.alive():
            raise RuntimeError("the worker exited:\n" + workers.log_tail())
        time.sleep(0.2)
    window, cpu, _ = watch.end()
    done = [f for f in fired if f is not None]
    result = Round(pending, done, len(tickets) - len(done), window, cpu)
    log(f"  timers: {len(done)}/{len(tickets)} closed with {pending:,} pending: lateness p50 "
        f"{result.late(50):.2f} s, max {result.max_late:.2f} s")
    return result


def measure(cfg: TimersConfig, workdir: Path, *, log: Callable[[str], None] = print
            ) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        assert rds.process is not None
        redis_pid = rds.process.pid
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_", "PUBLIC_BASE_URL"))}
        env.update(REDIS_URL=rds.url, BRIDGE_DATA_DIR=str(workdir / "var"),
                   BRIDGE_CONTACT_KEY=CONTACT_KEY,
                   PYTHONUNBUFFERED="1")
        workers = Workers(cfg.mode, cfg.processes, env, workdir)
        conn = redis.Redis.from_url(rds.url)
        try:
            workers.start()
            deadline = time.monotonic() + 60
            while not conn.exists(SCHEDULER_LOCK):
                if not workers.alive() or time.monotonic() > deadline:
                    raise RuntimeError("no scheduler lock:\n" + workers.log_tail())
                time.sleep(0.05)
            watch = CpuWatch({"worker": lambda: workers.pids, "redis": lambda: [redis_pid]})
            registry = ScheduledJobRegistry(  # type: ignore[no-untyped-call]
                QUEUE_HOUSEKEEPING, connection=conn, serializer=JSONSerializer)
            baseline = _round(rds.url, conn, workers, watch, 0, cfg, scheduled_timers(registry),
                              "t0", log)
            before = int(conn.info("memory")["used_memory"])
            t0 = time.perf_counter()
            bulk_schedule(conn, cfg.pending, cfg.chunk, first_ticket=10_000_000)
            bulk_s = time.perf_counter() - t0
            bulk_bytes = int(conn.info("memory")["used_memory"]) - before
            pending = scheduled_timers(registry)
            log(f"  timers: {pending:,} timers scheduled in {bulk_s:.1f} s "
                f"({bulk_bytes / pending:,.0f} B each in Redis)")
            loaded = _round(rds.url, conn, workers, watch, cfg.timers, cfg, pending, "t1",
                            log)
            pending_after = scheduled_timers(registry)
            failed = sum(FailedJobRegistry(q, connection=conn).count
                         for q in jobs.QUEUES_BY_PRIORITY)
        finally:
            workers.stop()
            conn.close()
    return Outcome(cfg, baseline, loaded, bulk_s, bulk_bytes, pending_after, failed)


def scheduled_timers(registry: ScheduledJobRegistry) -> int:
    """Timer jobs in the housekeeping registry (the workers' unsent-sends sweep is there
    too, one job at a time)."""
    return sum(1 for job_id in registry.get_job_ids() if job_id.startswith("timer-"))


def rows(o: Outcome) -> list[Row]:
    b, ld = o.baseline, o.loaded
    k = o.cfg.timers
    closed_once = sum(f.closings == 1 for f in (*b.fired, *ld.fired))
    return [
        Row(bench="timers",
            name=f"close-after-solved timer lateness, p50 of {k}, {ld.pending:,} timers pending",
            value=ld.late(50), unit="s", baseline=b.late(50),
            baseline_name=f"same, {b.pending} pending", target=Target(op="<", threshold=TARGET_S)),
        Row(bench="timers",
            name=f"close-after-solved timer lateness, max of {k}, {ld.pending:,} timers pending",
            value=ld.max_late, unit="s", baseline=b.max_late,
            baseline_name=f"same, {b.pending} pending", target=Target(op="<", threshold=TARGET_S),
            note=f"{ld.early + b.early} fired before their due time"),
        Row(bench="timers", name="tickets closed exactly once by their timer",
            value=closed_once, unit="tickets", baseline=2 * k,
            baseline_name="timers due", target=Target(op="==", threshold=1.0, on="ratio"),
            note=f"{o.pending_after:,} far timers still pending, {o.failed_jobs} failed jobs"),
        Row(bench="timers", name=f"Redis memory per pending timer ({o.cfg.pending:,})",
            value=o.bulk_bytes / o.cfg.pending, unit="B",
            note=f"scheduled in {o.bulk_s:.1f} s"),
    ]


def _round_line(label: str, r: Round) -> list[str]:
    recorded = sorted((f.recorded_ms - f.due_ms) / 1000 for f in r.fired)
    return [label, f"{len(r.fired)}/{len(r.fired) + r.unfired}", fmt(r.late(50)),
            fmt(r.late(90)), fmt(r.max_late), fmt(min((f.late_s for f in r.fired),
                                                       default=math.nan)),
            str(r.early), fmt(percentile(recorded, 50)) if recorded else "—",
            f"{r.cpu_percent.get('worker', 0):.0f}%", f"{r.cpu_percent.get('redis', 0):.0f}%",
            f"{r.cpu_percent.get('others', 0):.0f}%"]


def sections(ctx: Context, o: Outcome) -> None:
    cfg = o.cfg
    head = ["Round", "closed", "late p50 s", "p90 s", "max s", "min s", "early",
            "at_ms − due p50 s", "worker CPU", "Redis CPU", "other processes"]
    how = "`python -m workers`" if cfg.mode == "fork" and cfg.processes == 1 else (
        f"`python -m workers --processes {cfg.processes}`" if cfg.mode == "processes"
        else f"{cfg.processes} × `python -m workers --{cfg.mode}`")
    text = [
        f"{how} (RQ's scheduler in its own process, one pass a second) against an embedded "
        f"Redis (AOF everysec). Each round: {cfg.timers} WhatsApp tickets solved just under "
        f"an hour ago, their `{AUTOMATION}` timers set by `workers.automations.schedule_timer` "
        f"and due {cfg.spacing_ms} ms apart starting {cfg.due_in_s:g} s later. Lateness is "
        "when the closing event was written (its stream id, Redis's clock) minus the due "
        "time; `at_ms − due` is what the event records (the worker never records a time "
        "before the due time). CPU is % of one core over the round.",
        "",
        table(head, [_round_line(f"{o.baseline.pending:,} other timers pending", o.baseline),
                     _round_line(f"{o.loaded.pending:,} other timers pending", o.loaded)]),
        "",
        f"The {cfg.pending:,} pending timers are real RQ scheduled jobs (`enqueue_at`, "
        f"pipelined by {cfg.chunk:,}): scheduled in {o.bulk_s:.1f} s, "
        f"{o.bulk_bytes / 1e6:.0f} MB of Redis memory ({o.bulk_bytes / cfg.pending:,.0f} B "
        f"each: an RQ job hash, whose default description repeats the payload, and values "
        "over 64 bytes keep Redis from its compact hash encoding); "
        f"{o.pending_after:,} still pending at the end, {o.failed_jobs} failed jobs. "
        "RQ's scheduler asks the registry only for what is due (ZRANGEBYSCORE up to now, "
        "1,000 at a time), so what is pending later costs it nothing.",
    ]
    ctx.add_section("Timers details", "\n".join(text))


def run(ctx: Context, cfg: TimersConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else TimersConfig())
    outcome = measure(cfg, ctx.workdir / "timers", log=ctx.log)
    sections(ctx, outcome)
    return rows(outcome)
