"""Outbound: agent replies sent per second by real `python -m workers` processes through the
Twilio stub answering in 150 ms (DESIGN §8: 80 messages/s sustained on this machine).

Set-up: an embedded Redis with AOF on (appendfsync everysec), the Twilio stub
(tests/stubs/twilio_stub.py: every request checked against Twilio's OpenAPI document) in a
process of its own (`python -m bench.outbound stub`), and the workers as an operator runs
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
2. baseline: a backlog of no-op RQ jobs (`bench.outbound.noop`) on the outbound queue, run by
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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import redis
import redis.asyncio
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.corpus import ACCOUNT_SID, BUSINESS_NUMBER, contact_address
from bench.data import CONTACT_KEY, bench_store
from bench.procs import ROOT, Server, children_by_parent, python_module
from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.tickets import Delivery, EventType
from bridge.jobs import QUEUE_OUTBOUND, JobQueues
from bridge.store.embedded import EmbeddedRedis, free_port

AUTH_TOKEN = "bench-twilio-token-" + "0123456789abcdef"
PUBLIC_BASE_URL = "https://bridge.example.com"
NOOP = "bench.outbound.noop"
TARGET_RATE = 80.0  # WhatsApp's per-sender ceiling (DESIGN §8)
SCHEDULER_LOCK = f"rq:scheduler-lock:{QUEUE_OUTBOUND}"

# processes: `python -m workers --processes K`; no-fork / fork: K separate
# `python -m workers --no-fork` / `--fork` processes (for comparisons).
WorkerMode = Literal["processes", "no-fork", "fork"]


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


def noop(payload: dict[str, Any]) -> None:
    """The baseline job: RQ's own cost, nothing else."""


# ------------------------------------------------------------------ processes: CPU, memory


def process_tree(pids: Iterable[int]) -> list[int]:
    """These processes and their live descendants (bounded)."""
    tree = children_by_parent()
    found: list[int] = []
    todo = list(pids)
    while todo and len(found) < 2000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of these process trees: each live process's own time plus that of the
    children it reaped (a forking worker's work horses end up in its cutime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


@dataclass(frozen=True)
class Memory:
    """One process, from /proc/<pid>/smaps_rollup, in bytes. PSS splits shared pages among
    the processes mapping them (PSS summed over processes = their real footprint); USS
    (private pages) is what ending this one process would free."""

    pid: int
    rss: int
    pss: int
    uss: int


def memory(pid: int) -> Memory | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[name.strip()] = int(parts[0])
    return Memory(pid, kb.get("Rss", 0) * 1024, kb.get("Pss", 0) * 1024,
                  (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024)


class CpuWatch:
    """CPU used per labelled process group between begin() and end(), and what the rest of
    the machine used meanwhile ("others": other tenants of a shared machine)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.t0 = 0.0
        self.start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out = {label: cpu_seconds(pids()) for label, pids in self.groups.items()}
        out["bench driver"] = time.process_time()
        with suppress(OSError, ValueError, IndexError):
            cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
            busy = sum(int(x) for x in cpu) - int(cpu[3]) - int(cpu[4])  # minus idle, iowait
            out["machine"] = busy / os.sysconf("SC_CLK_TCK")
        return out

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        self.start = self._read()

    def end(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(window s, CPU % of one core per label, CPU seconds per label)."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        now = self._read()
        used = {k: max(0.0, now[k] - v) for k, v in self.start.items() if k in now}
        machine = used.pop("machine", None)
        if machine is not None:
            used["others"] = max(0.0, machine - sum(used.values()))
        return elapsed, {k: 100 * v / elapsed for k, v in used.items()}, used


# ------------------------------------------------------------------ the stub, in a process


async def _serve_stub(port: int, control_port: int, latency_s: float) -> None:
    from aiohttp import web

    from tests.stubs.twilio_stub import TwilioStub

    stub = TwilioStub(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency_s=latency_s,
                      port=port)
    await stub.start()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def records(request: web.Request) -> web.Response:
        return web.json_response({
            "accepted": stub.accepted, "refused": stub.refused,
            "requests": [[r.status, r.get("To"), r.get("Body"), r.sid, r.at,
                          "; ".join(r.problems)] for r in stub.requests],
        })

    control = web.Application()
    control.router.add_get("/healthz", healthz)
    control.router.add_get("/records", records)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await stub.stop()


def stub_main(argv: Sequence[str]) -> None:
    """`python -m bench.outbound stub --port P --control-port C --latency S`: the Twilio
    stub on P; GET /healthz and /records (every request it answered) on C."""
    parser = argparse.ArgumentParser(prog="python -m bench.outbound stub")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.15)
    args = parser.parse_args(argv)
    asyncio.run(_serve_stub(args.port, args.control_port, args.latency))


@dataclass(frozen=True)
class StubRequest:
    status: int
    to: str
    body: str
    sid: str
    at: float
    problems: str


def stub_requests(control_port: int) -> list[StubRequest]:
    with urllib.request.urlopen(f"http://127.0.0.1:{control_port}/records", timeout=10) as r:
        data = json.loads(r.read())
    return [StubRequest(*row) for row in data["requests"]]


# ------------------------------------------------------------------ workers


class Workers:
    """The worker processes under test, each in its own session; stop() is SIGTERM (warm
    shutdown) and SIGKILL of the process group if that takes too long."""

    def __init__(self, mode: WorkerMode, processes: int, env: dict[str, str], logdir: Path
                 ) -> None:
        self.mode = mode
        self.processes = processes
        self.env = env
        self.logdir = logdir
        self.popen: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._started = 0

    def start(self) -> None:
        if self.mode == "processes":
            commands = [python_module("workers", "--processes", str(self.processes))]
        else:
            flag = "--no-fork" if self.mode == "no-fork" else "--fork"
            commands = [python_module("workers", flag) for _ in range(self.processes)]
        for args in commands:
            self._started += 1
            log = (self.logdir / f"worker-{self._started}.log").open("wb")
            self._logs.append(log)
            self.popen.append(subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.popen]

    def alive(self) -> bool:
        return bool(self.popen) and all(p.poll() is None for p in self.popen)

    def worker_pids(self) -> list[int]:
        """The processes that run jobs (not the supervisor; RQ's scheduler process is a
        child of one worker)."""
        if self.mode == "processes":
            tree = children_by_parent()
            return [c for p in self.pids for c in tree.get(p, [])]
        return self.pids

    def log_tail(self, chars: int = 3000) -> str:
        logs = sorted(self.logdir.glob("worker-*.log"))[-3:]
        return "\n".join(f"--- {f.name}\n" + f.read_text(errors="replace")[-chars:]
                         for f in logs)

    def stop(self, timeout_s: float = 40.0) -> list[int | None]:
        """SIGTERM, then wait; the exit codes (None: had to be killed)."""
        codes: list[int | None] = []
        for p in self.popen:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.popen:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                for pid in process_tree([p.pid]):
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                p.wait()
                codes.append(None)
        for log in self._logs:
            log.close()
        self._logs = []
        self.popen = []
        return codes


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

    def __init__(self, conn: redis.Redis, workers: Workers, watch: CpuWatch,
                 cfg: OutboundConfig) -> None:
        self.conn = conn
        self.workers = workers
        self.watch = watch
        self.cfg = cfg
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
        timeout = timeout_s or self.cfg.timeout_s
        poll = self.cfg.poll_s
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


# ------------------------------------------------------------------ the measurement


@dataclass(frozen=True)
class Shutdown:
    enqueued: int
    in_flight: int  # `sending` when SIGTERM was sent
    sent_before_exit: int  # accepted and recorded by the time the workers had exited
    left_sending: int  # still `sending` after the exit: must be 0 (a warm shutdown)
    stop_s: float
    codes: list[int | None]


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
    workers.start()  # the rest goes out after the "deploy"
    _wait(lambda: all(s.get("provider_id") or s.get("state") == Delivery.FAILED
                      for s in deliveries(url, batch)),
          "the sends left queued by the stopped workers", cfg.timeout_s, workers, 0.1)
    return Shutdown(len(batch), in_flight, sent, left, stop_s, codes)


def measure(cfg: OutboundConfig, workdir: Path, *, log: Callable[[str], None] = print
            ) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        assert rds.process is not None
        redis_pid = rds.process.pid
        port, control_port = free_port(), free_port()
        stub = Server("twilio stub", python_module(
            "bench.outbound", "stub", "--port", str(port), "--control-port",
            str(control_port), "--latency", str(cfg.latency_s)),
            port=control_port, log_path=workdir / "stub.log")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_", "PUBLIC_BASE_URL"))}
        env.update(REDIS_URL=rds.url, PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                   BRIDGE_CONTACT_KEY=CONTACT_KEY,
                   BRIDGE_WORKER_EXTRA_JOBS=NOOP,
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
            driver = Driver(conn, workers, watch, cfg)
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
                f"{shutdown.left_sending} left sending")
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


# ------------------------------------------------------------------ rows and sections


def _how(cfg: OutboundConfig) -> str:
    if cfg.mode == "processes":
        return f"`python -m workers --processes {cfg.processes}`"
    return f"{cfg.processes} × `python -m workers --{cfg.mode}`"


def rows(o: Outcome) -> list[Row]:
    cfg = o.cfg
    mb = 1024 * 1024
    standalone = o.standalone_memory
    return [
        Row(bench="outbound",
            name=f"sends/s, {_how(cfg)}, stub answering in {cfg.latency_s * 1000:.0f} ms "
                 f"(backlog of {o.sends.jobs:,}, 10-90%)",
            value=o.sends.rate(), unit="msg/s", baseline=o.noop.rate(),
            baseline_name="no-op RQ jobs/s, same processes",
            target=Target(op=">=", threshold=TARGET_RATE)),
        Row(bench="outbound",
            name=f"{cfg.open_rate:g} sends/s offered for {cfg.open_s:g} s: p99 enqueue → "
                 "Twilio's answer recorded",
            value=o.open_latency_ms["p99"], unit="ms", baseline=cfg.latency_s * 1000,
            baseline_name="the stub's answer time",
            note=f"p50 {fmt(o.open_latency_ms['p50'])} ms"),
        Row(bench="outbound", name="worker CPU time per send",
            value=o.sends.cpu_ms_per_job("workers"), unit="ms",
            baseline=o.noop.cpu_ms_per_job("workers"), baseline_name="per no-op RQ job"),
        Row(bench="outbound",
            name=f"memory per worker process, {o.worker_processes} forked by the supervisor "
                 "(PSS)",
            value=o.mean_pss / mb, unit="MiB",
            baseline=standalone.pss / mb if standalone else None,
            baseline_name="one separately started `python -m workers --no-fork`",
            note=f"USS {fmt(o.mean_uss / mb)} MiB, RSS {fmt(o.mean_rss / mb)} MiB; whole "
                 f"tree {fmt(o.tree_pss / mb)} MiB"),
        Row(bench="outbound", name="replies accepted by the stub exactly once, as recorded",
            value=o.accepted_once, unit="replies", baseline=o.events,
            baseline_name="replies enqueued", target=Target(op="==", threshold=1.0,
                                                             on="ratio"),
            note=f"{o.duplicates} duplicates, {o.never_sent} never sent, {o.invalid} "
                 f"invalid, {o.failed_jobs} failed jobs"),
        Row(bench="outbound",
            name=f"SIGTERM with {o.shutdown.in_flight} sends in flight: left `sending`",
            value=o.shutdown.left_sending, unit="sends", target=Target(op="==", threshold=0),
            note=f"stopped in {o.shutdown.stop_s:.1f} s, exit {o.shutdown.codes}"),
    ]


def _cpu_line(label: str, d: Drain, rate: float) -> list[str]:
    c = d.cpu_percent
    return [label, f"{rate:,.0f}", f"{d.window_s:.1f}", f"{c.get('workers', 0):.0f}%",
            fmt(d.cpu_ms_per_job("workers")), f"{c.get('redis', 0):.0f}%",
            f"{c.get('stub', 0):.0f}%", f"{c.get('bench driver', 0):.0f}%",
            f"{c.get('others', 0):.0f}%"]


def sections(ctx: Context, o: Outcome) -> None:
    cfg = o.cfg
    mb = 1024 * 1024
    head = ["Phase", "jobs/s", "window s", "workers CPU", "worker CPU ms/job", "Redis CPU",
            "stub CPU", "driver CPU", "other processes"]
    lines = [
        _cpu_line(f"no-op RQ jobs (backlog of {o.noop.jobs:,})", o.noop, o.noop.rate()),
        _cpu_line(f"sends (backlog of {o.sends.jobs:,})", o.sends, o.sends.rate()),
        _cpu_line(f"sends offered at {cfg.open_rate:g}/s for {cfg.open_s:g} s", o.open,
                  o.open.rate()),
    ]
    noise = max(d.cpu_percent.get("others", 0) for d in (o.noop, o.sends, o.open))
    warning = (f"**Noisy run:** other processes used up to {noise:.0f}% of a core during "
               "the measured windows.\n\n" if noise > 25 else "")
    sup = o.supervisor_memory
    alone = o.standalone_memory
    lat = o.open_latency_ms
    rate = o.sends.rate()
    # Each process runs one job at a time: the time a send holds its process.
    cycle_s = cfg.processes / rate if rate > 0 else math.nan
    needed = math.ceil(TARGET_RATE * cycle_s) if rate > 0 else 0
    text = [
        warning + f"{_how(cfg)} against the Twilio stub answering in "
        f"{cfg.latency_s * 1000:.0f} ms, in its own process; embedded Redis (AOF everysec); "
        f"{o.layout}. Each reply is a real agent reply on its own WhatsApp ticket, enqueued "
        "with `JobQueues.send_outbound` as the web process does. CPU is % of one core over "
        "the measured window (the workers' figure covers the supervisor, the workers and "
        "RQ's scheduler process).",
        "",
        table(head, lines),
        "",
        f"A worker process runs one job at a time, so a send held its process "
        f"{fmt(cycle_s * 1000)} ms on average in the backlog phase: the stub's "
        f"{cfg.latency_s * 1000:.0f} ms, then the job's and RQ's own work and the wait for a "
        f"CPU; {needed} processes are the minimum for {TARGET_RATE:g} sends/s at that pace. "
        f"At {cfg.open_rate:g} sends/s offered, enqueue → answer recorded: p50 "
        f"{fmt(lat['p50'])} ms, p90 {fmt(lat['p90'])} ms, p99 {fmt(lat['p99'])} ms, max "
        f"{fmt(lat['max'])} ms (a queue building up would show as latency growing past the "
        "stub's answer time).",
        "",
        f"Memory (`/proc/<pid>/smaps_rollup` after the sustained phase): "
        f"{o.worker_processes} worker processes, each RSS {fmt(o.mean_rss / mb)} MiB, PSS "
        f"{fmt(o.mean_pss / mb)} MiB, USS {fmt(o.mean_uss / mb)} MiB (the workers are forked "
        "from a supervisor that imported and warmed everything, so most of their pages are "
        "shared)"
        + (f"; supervisor RSS {fmt(sup.rss / mb)} MiB, PSS {fmt(sup.pss / mb)} MiB"
           if sup else "")
        + f"; the whole tree (supervisor, workers, scheduler) {fmt(o.tree_pss / mb)} MiB PSS. "
        + (f"A separately started `python -m workers --no-fork`, measured after the warm-up "
           f"({o.standalone_jobs} jobs, alongside the others): RSS {fmt(alone.rss / mb)} MiB, "
           f"PSS {fmt(alone.pss / mb)} MiB, USS {fmt(alone.uss / mb)} MiB, what each of K "
           "such processes costs." if alone else ""),
        "",
        f"Warm shutdown: {o.shutdown.enqueued} more replies enqueued, SIGTERM sent with "
        f"{o.shutdown.in_flight} of them `sending`; the workers exited in "
        f"{o.shutdown.stop_s:.1f} s (exit status {o.shutdown.codes}) with "
        f"{o.shutdown.sent_before_exit} accepted and recorded and {o.shutdown.left_sending} "
        "left `sending`; started again, they sent the rest.",
        "",
        f"Correctness, every phase: {o.accepted_once:,} of {o.events:,} replies accepted by "
        f"the stub exactly once with the provider id the worker recorded; {o.duplicates} "
        f"duplicates, {o.never_sent} never sent, {o.invalid} requests refused as invalid "
        f"(OpenAPI schema), {o.failed_jobs} failed jobs.",
    ]
    ctx.add_section("Outbound details", "\n".join(text))


def run(ctx: Context, cfg: OutboundConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else OutboundConfig())
    outcome = measure(cfg, ctx.workdir / "outbound", log=ctx.log)
    sections(ctx, outcome)
    return rows(outcome)


def main(argv: Sequence[str]) -> None:
    """`python -m bench.outbound [--processes K --mode M ...]`: this benchmark alone, printed
    (`python -m bench --only outbound` is the harness's way); `... stub`: the stub server."""
    if argv and argv[0] == "stub":
        stub_main(argv[1:])
        return
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
