"""Outbound: agent replies sent per second by real `python -m workers` processes through the
Twilio stub answering in 150 ms (DESIGN §8: 80 messages/s sustained on this machine).

Set-up: an embedded Redis with AOF on (appendfsync everysec), the Twilio stub
(tests/stubs/twilio_stub.py: every request checked against Twilio's OpenAPI document) in a
process of its own (`python -m bench.stub_server`), and the workers as an operator runs
them for volume: `python -m workers --processes K` (one supervisor, K in-process workers).
Nothing is pinned: workers, Redis, the stub and this driver share the machine's CPUs, and
the CPU each used is reported (the stub's is not the bridge's cost: Twilio's CPU is not
ours).

Every reply is recorded through the store as the web process records it: a customer message
routed per contact (so the WhatsApp 24-hour window is open), then the agent's reply
(`store.update_ticket(..., event=(EventType.AGENT_REPLY, body, {}))`), enqueued with
`JobQueues(sync_redis).send_outbound(tid, eid)`. The reply's text names its event, so the
stub's records tell which event each request carried.

Phases, each bounded in jobs and in time:
1. warm-up: no-op jobs and sends, so that every worker has imported what the jobs import and
   opened its connections;
2. baseline: a backlog of no-op RQ jobs (`bench.outbound_driver.noop`) on the outbound queue, run by
   the same worker processes: what RQ itself costs per job;
3. max rate: a backlog of sends; the rate is taken between 10% and 90% of the jobs finished
   (start-up and tail left out);
4. sustained: sends enqueued at a constant 80/s (open loop); latency from the enqueue to the
   worker recording Twilio's answer (a growing queue would show here);
5. warm shutdown: SIGTERM to the supervisor while sends are in flight; none may be left
   `sending` (the in-flight ones finish and are recorded, the others stay queued), then
   workers start again and send the rest;
6. correctness: every reply accepted by the stub exactly once, with the provider id the
   worker recorded; no request refused as invalid, no failed job.

The worker processes and their CPU and memory are bench/workerprocs.py's, the stub process
bench/stub_server.py's, the replies and the draining bench/outbound_driver.py's, the rows
and the details section bench/outbound_report.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio
from rq import Worker

from bench import outbound_report
from bench.corpus import ACCOUNT_SID, BUSINESS_NUMBER
from bench.data import CONTACT_KEY
from bench.outbound_driver import NOOP, Drain, Driver, deliveries, event_of, make_events
from bench.outbound_report import TARGET_RATE
from bench.procs import Server, python_module
from bench.report import Context, Row
from bench.stats import summary_ms
from bench.stub_server import AUTH_TOKEN, stub_requests
from bench.workerprocs import CpuWatch, Memory, WorkerMode, Workers, memory, process_tree
from bridge.core.tickets import Delivery
from bridge.jobs import QUEUE_OUTBOUND
from bridge.store.embedded import EmbeddedRedis, free_port

PUBLIC_BASE_URL = "https://bridge.example.com"
SCHEDULER_LOCK = f"rq:scheduler-lock:{QUEUE_OUTBOUND}"


@dataclass(frozen=True, kw_only=True)
class OutboundConfig:
    latency_s: float = 0.15  # the stub's answer time
    processes: int = 16  # worker processes = sends in flight
    mode: WorkerMode = "processes"
    warmup_sends: int = 48
    noop_jobs: int = 3000
    backlog: int = 2000  # sends drained as fast as the workers go
    open_rate: float = TARGET_RATE
    open_s: float = 12.0
    shutdown_sends: int = 32  # enqueued just before SIGTERM
    timeout_s: float = 60.0  # per phase
    poll_s: float = 0.05


SMOKE = OutboundConfig(processes=2, latency_s=0.05, warmup_sends=2, noop_jobs=40, backlog=20,
                       open_rate=20.0, open_s=0.5, shutdown_sends=4, timeout_s=30.0)
QUICK = OutboundConfig(noop_jobs=1500, backlog=800, open_s=5.0)


# ------------------------------------------------------------------ the measurement


# A job stranded in RQ's intermediate list: first seen by a maintenance pass (every 30 s),
# failed by the first pass a minute after that, then its retry 5 s later.
STRANDED_JOB_RECOVERY_S = 30.0 + 60.0 + 30.0 + 5.0


@dataclass(frozen=True)
class Shutdown:
    enqueued: int
    in_flight: int  # `sending` when SIGTERM was sent
    sent_before_exit: int  # accepted and recorded by the time the workers had exited
    left_sending: int  # still `sending` after the exit: must be 0 (a warm shutdown)
    stop_s: float
    codes: list[int | None]
    rest_s: float  # from the restart until every send of the batch had gone out


@dataclass(frozen=True)
class Outcome:
    cfg: OutboundConfig
    noop: Drain
    sends: Drain
    open: Drain
    open_latency_ms: dict[str, float]  # enqueue -> the worker recorded Twilio's answer
    shutdown: Shutdown
    events: int
    accepted_once: int  # accepted exactly once, with the provider id the worker recorded
    duplicates: int
    never_sent: int
    invalid: int
    failed_jobs: int
    workers_memory: list[Memory]
    tree_pss: int  # supervisor + workers + scheduler
    supervisor_memory: Memory | None
    standalone_memory: Memory | None  # one separately started `python -m workers --no-fork`
    standalone_jobs: int  # the jobs it ran before it was measured
    worker_processes: int
    layout: str

    @property
    def mean_pss(self) -> float:
        return statistics.mean(m.pss for m in self.workers_memory) \
            if self.workers_memory else math.nan

    @property
    def mean_uss(self) -> float:
        return statistics.mean(m.uss for m in self.workers_memory) \
            if self.workers_memory else math.nan

    @property
    def mean_rss(self) -> float:
        return statistics.mean(m.rss for m in self.workers_memory) \
            if self.workers_memory else math.nan


def _jobs_done(conn: redis.Redis, pid: int) -> int:
    """Jobs run so far by the RQ worker with this pid."""
    for worker in Worker.all(connection=conn):
        if worker.pid == pid:
            return int(worker.successful_job_count + worker.failed_job_count)
    return 0


def _wait(check: Callable[[], bool], what: str, timeout_s: float, workers: Workers,
          interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / interval_s) + 10):
        if check():
            return
        if not workers.alive():
            raise RuntimeError(f"a worker process exited while waiting for {what}:\n"
                               + workers.log_tail())
        if time.monotonic() > deadline:
            break
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}\n"
                       + workers.log_tail())


def _shutdown_phase(url: str, driver: Driver, workers: Workers,
                    batch: list[tuple[str, str]], cfg: OutboundConfig) -> Shutdown:
    """SIGTERM while sends are in flight; then start the workers again for the rest."""
    driver.sends(batch)

    def sending() -> int:
        return sum(s.get("state") == Delivery.SENDING for s in deliveries(url, batch))

    want = max(1, min(len(batch), cfg.processes) // 2)
    _wait(lambda: sending() >= want, f"{want} sends in flight", cfg.timeout_s, workers,
          interval_s=0.005)
    in_flight = sending()
    t0 = time.perf_counter()
    codes = workers.stop()
    stop_s = time.perf_counter() - t0
    after = deliveries(url, batch)
    left = sum(s.get("state") == Delivery.SENDING for s in after)
    sent = sum(bool(s.get("provider_id")) for s in after)
    t0 = time.perf_counter()
    workers.start()  # the rest goes out after the "deploy"
    # A SIGTERM that landed while a worker was taking a job off the queue left that job in
    # RQ's intermediate list until maintenance failed it and its retry sent it (4 runs of
    # 13 on 2026-12-03); the workers now finish such a job before stopping
    # (workers/dequeue.py). The wait still allows for that path, and the report gives how
    # long the rest took: over a minute means a job was stranded again.
    _wait(lambda: all(s.get("provider_id") or s.get("state") == Delivery.FAILED
                      for s in deliveries(url, batch)),
          "the sends left queued by the stopped workers",
          cfg.timeout_s + STRANDED_JOB_RECOVERY_S, workers, 0.1)
    rest_s = time.perf_counter() - t0
    return Shutdown(len(batch), in_flight, sent, left, stop_s, codes, rest_s)


def measure(cfg: OutboundConfig, workdir: Path, *, log: Callable[[str], None] = print
            ) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        assert rds.process is not None
        redis_pid = rds.process.pid
        port, control_port = free_port(), free_port()
        stub = Server("twilio stub", python_module(
            "bench.stub_server", "--port", str(port), "--control-port",
            str(control_port), "--latency", str(cfg.latency_s)),
            port=control_port, log_path=workdir / "stub.log")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_", "PUBLIC_BASE_URL"))}
        env.update(REDIS_URL=rds.url, PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                   BRIDGE_CONTACT_KEY=CONTACT_KEY, BRIDGE_WORKER_EXTRA_JOBS=NOOP,
                   TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                   TWILIO_WHATSAPP_FROM=BUSINESS_NUMBER,
                   TWILIO_API_URL=f"http://127.0.0.1:{port}",
                   BRIDGE_DATA_DIR=str(workdir / "var"), PYTHONUNBUFFERED="1")
        workers = Workers(cfg.mode, cfg.processes, env, workdir)
        conn = redis.Redis.from_url(rds.url)
        with ExitStack() as cleanup:  # in reverse: workers, then the stub, then conn
            cleanup.callback(conn.close)
            cleanup.enter_context(stub)
            cleanup.callback(workers.stop)
            stub.start()
            n_open = int(cfg.open_rate * cfg.open_s)
            total = cfg.warmup_sends + cfg.backlog + n_open + cfg.shutdown_sends
            t_setup = time.perf_counter()
            events = asyncio.run(make_events(rds.url, total, run="b0"))
            log(f"  outbound: {total:,} replies recorded in "
                f"{time.perf_counter() - t_setup:.1f} s; starting {cfg.processes} worker "
                f"processes ({cfg.mode})")
            workers.start()
            _wait(lambda: Worker.count(connection=conn) >= cfg.processes,
                  f"{cfg.processes} workers to register", cfg.timeout_s, workers)
            watch = CpuWatch({"workers": lambda: workers.pids,
                              "redis": lambda: [redis_pid],
                              "stub": lambda: [stub.pid]})
            driver = Driver(conn, workers, watch, timeout_s=cfg.timeout_s, poll_s=cfg.poll_s)
            cut = [cfg.warmup_sends, cfg.warmup_sends + cfg.backlog,
                   cfg.warmup_sends + cfg.backlog + n_open]
            warm, backlog = events[:cut[0]], events[cut[0]:cut[1]]
            paced, last = events[cut[1]:cut[2]], events[cut[2]:]

            # 1. warm-up, with a separately started in-process worker alongside (the
            # scheduler locks are taken: it forks no scheduler that would share its pages)
            _wait(lambda: bool(conn.exists(SCHEDULER_LOCK)), "the scheduler", cfg.timeout_s,
                  workers)
            standalone = Workers("no-fork", 1, env, workdir)
            cleanup.callback(standalone.stop)
            standalone.start()
            _wait(lambda: Worker.count(connection=conn) > cfg.processes,
                  "the standalone worker to register", cfg.timeout_s, standalone)
            noops = 4 * cfg.processes

            def warm_up() -> None:
                driver.noops(noops)
                driver.sends(warm)

            driver.drain(noops + len(warm), warm_up, watch=False)
            standalone_memory = memory(standalone.pids[0])
            standalone_jobs = _jobs_done(conn, standalone.pids[0])
            standalone.stop()
            # 2. no-op jobs
            noop_drain = driver.drain(cfg.noop_jobs, lambda: driver.noops(cfg.noop_jobs))
            log(f"  outbound: no-op jobs {noop_drain.rate():,.0f}/s (workers CPU "
                f"{noop_drain.cpu_percent.get('workers', 0):.0f}%)")
            # 3. a backlog of sends
            send_drain = driver.drain(len(backlog), lambda: driver.sends(backlog))
            log(f"  outbound: sends {send_drain.rate():,.0f}/s (CPU: workers "
                f"{send_drain.cpu_percent.get('workers', 0):.0f}%, stub "
                f"{send_drain.cpu_percent.get('stub', 0):.0f}%, Redis "
                f"{send_drain.cpu_percent.get('redis', 0):.0f}%, others "
                f"{send_drain.cpu_percent.get('others', 0):.0f}%)")
            # 4. open loop at the target rate
            enqueued_at: dict[tuple[str, str], float] = {}

            def paced_sends() -> None:
                t0 = time.perf_counter()
                for i, (tid, eid) in enumerate(paced):
                    delay = t0 + i / cfg.open_rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    enqueued_at[(tid, eid)] = time.time()
                    driver.queues.send_outbound(tid, eid)

            open_drain = driver.drain(len(paced), paced_sends,
                                      timeout_s=cfg.open_s + cfg.timeout_s)
            latencies = [int(st["sent_at_ms"]) / 1000 - enqueued_at[key]
                         for key, st in zip(paced, deliveries(rds.url, paced),
                                            strict=True) if st.get("sent_at_ms")]
            open_latency = summary_ms(latencies)
            log(f"  outbound: {cfg.open_rate:g} sends/s offered: enqueue -> answer "
                f"recorded p50 {open_latency['p50']:.0f} ms, p99 "
                f"{open_latency['p99']:.0f} ms")
            worker_pids = workers.worker_pids()
            workers_memory = [m for m in map(memory, worker_pids) if m is not None]
            tree_pss = sum(m.pss for m in map(memory, process_tree(workers.pids)) if m)
            supervisor_memory = memory(workers.pids[0]) if cfg.mode == "processes" \
                else None
            # 5. warm shutdown with sends in flight, restart
            shutdown = _shutdown_phase(rds.url, driver, workers, last, cfg)
            log(f"  outbound: SIGTERM with {shutdown.in_flight} sends in flight: "
                f"stopped in {shutdown.stop_s:.1f} s (exit {shutdown.codes}), "
                f"{shutdown.left_sending} left sending; the rest went out {shutdown.rest_s:.1f} s "
                f"after the restart")
            # 6. correctness
            requests = stub_requests(control_port)
            states = deliveries(rds.url, events)
            failed_jobs = driver.failed.count
    accepted = Counter(event_of(r.body) for r in requests if r.status == 201)
    sid_event = {r.sid: event_of(r.body) for r in requests if r.status == 201}
    once = sum(1 for n, st in enumerate(states)
               if accepted.get(n) == 1 and sid_event.get(st.get("provider_id", "")) == n)
    return Outcome(
        cfg=cfg, noop=noop_drain, sends=send_drain, open=open_drain,
        open_latency_ms=open_latency, shutdown=shutdown, events=len(events),
        accepted_once=once, duplicates=sum(c - 1 for c in accepted.values() if c > 1),
        never_sent=sum(1 for n in range(len(events)) if n not in accepted),
        invalid=sum(1 for r in requests if r.problems), failed_jobs=failed_jobs,
        workers_memory=workers_memory, tree_pss=tree_pss,
        supervisor_memory=supervisor_memory, standalone_memory=standalone_memory,
        standalone_jobs=standalone_jobs, worker_processes=len(worker_pids),
        layout="no CPU pinning: workers, Redis, the stub and the driver share every CPU",
    )


def run(ctx: Context, cfg: OutboundConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else OutboundConfig())
    outcome = measure(cfg, ctx.workdir / "outbound", log=ctx.log)
    outbound_report.sections(ctx, outcome)
    return outbound_report.rows(outcome)


def main(argv: Sequence[str]) -> None:
    """`python -m bench.outbound [--processes K --mode M ...]`: this benchmark alone, printed
    (`python -m bench --only outbound` is the harness's way)."""
    parser = argparse.ArgumentParser(prog="python -m bench.outbound")
    defaults = OutboundConfig()
    parser.add_argument("--processes", type=int, default=defaults.processes)
    parser.add_argument("--mode", default=defaults.mode, choices=["processes", "no-fork", "fork"])
    parser.add_argument("--backlog", type=int, default=defaults.backlog)
    parser.add_argument("--noop-jobs", type=int, default=defaults.noop_jobs)
    parser.add_argument("--open-s", type=float, default=defaults.open_s)
    parser.add_argument("--latency", type=float, default=defaults.latency_s)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = OutboundConfig(processes=args.processes, mode=args.mode, backlog=args.backlog,
                         noop_jobs=args.noop_jobs, open_s=args.open_s, latency_s=args.latency)
    ctx = Context(workdir=args.workdir, docs_dir=args.workdir / "docs")
    from bench.report import console_table

    print(console_table(run(ctx, cfg)))
    for s in ctx.sections:
        print(f"\n## {s.title}\n\n{s.markdown}")


if __name__ == "__main__":
    main(sys.argv[1:])
