"""Worker faults: real `python -m workers` processes (forking HerokuWorker + RQ's scheduler,
RQ's timing shortened through the BRIDGE_WORKER_* settings), a private Redis and the
Twilio stub, all on loopback.

1. A worker and its work horse SIGKILLed while a send is in flight (a node dying): every
   message ends up accepted by Twilio or visibly failed on its ticket (`send_unconfirmed`
   for the one whose fate is unknown, listed by `bridge failed`), never silently lost, and
   the stub sees no message twice.
2. The worker holding RQ's scheduler lock SIGKILLed just before timers come due: the
   other worker takes the lock over and runs every timer exactly once.

RQ's own defaults would make both recoveries take up to ~15 minutes; the bridge's defaults
(config/settings.py) bound them to about two, and FAST_RECOVERY here to about one.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from bench.timers import scheduled_timers
from bridge import jobs
from bridge.commands.outbound import failed
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.rules import load_config
from bridge.core.tickets import Delivery, Event, EventType, Status
from bridge.jobs import QUEUE_HOUSEKEEPING, QUEUE_OUTBOUND, QUEUES_BY_PRIORITY, JobQueues
from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis
from bridge.store.tickets import TicketStore
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.factories import inbound_message
from tests.faults.workers_support import (
    FAST_RECOVERY,
    ROOT,
    WorkerProcess,
    in_store,
    now_ms,
    sending_worker_env,
    wait_until,
    worker_env,
)
from tests.stubs.twilio_stub import run_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SENDS = 20
LATENCY_S = 1.5
SENT_BEFORE_KILL = 3
SETTLE_TIMEOUT_S = 120

TIMERS = 20
DUE_IN_S = 6
AUTOMATION = "close_solved_whatsapp"
TAKEOVER_TIMEOUT_S = 130


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connection(private_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Started workers; whatever is still running at the end is SIGKILLed with its horse."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


def start_worker(started: list[WorkerProcess], env: dict[str, str], tmp_path: Path
                 ) -> WorkerProcess:
    worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log")
    started.append(worker)
    return worker


def customer(n: int) -> str:
    return f"whatsapp:+3361{n:07d}"


# ------------------------------------------------------------------ 1. SIGKILL mid-send


async def open_tickets_with_replies(store: TicketStore, count: int) -> list[tuple[str, str]]:
    """One ticket per customer (message routed now: the window is open), alice's reply."""
    out: list[tuple[str, str]] = []
    for n in range(count):
        routed = await store.route_inbound(
            inbound_message(f"question {n}", sid=f"SM{n:032x}", address=customer(n)),
            RatingSignal(), ChannelPolicy(), now_ms=now_ms())
        assert routed.ticket_id
        _, eid = await store.update_ticket(
            routed.ticket_id, author="alice", now_ms=now_ms(),
            event=(EventType.AGENT_REPLY, f"reply {n} on ticket {routed.ticket_id}", {}))
        assert eid
        out.append((routed.ticket_id, eid))
    return out


def deliveries(url: str, sends: list[tuple[str, str]]) -> list[dict[str, str]]:
    async def read(store: TicketStore) -> list[dict[str, str]]:
        return [await store.delivery_state(tid, eid) for tid, eid in sends]

    return in_store(url, read)


def settled(state: dict[str, str]) -> bool:
    """Accepted by Twilio, or visibly failed: nothing left for a worker to do."""
    current = state.get("state", Delivery.QUEUED.value)
    if current in (Delivery.FAILED, Delivery.UNDELIVERED):
        return True
    return current not in (Delivery.QUEUED, Delivery.SENDING) or bool(state.get("provider_id"))


def test_worker_sigkilled_mid_send_loses_nothing_and_sends_nothing_twice(
    private_redis: EmbeddedRedis, connection: redis.Redis, workers: list[WorkerProcess],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = private_redis.url
    with run_in_thread(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                       latency_s=LATENCY_S) as stub:
        env = sending_worker_env(url, tmp_path, stub.url)
        first = start_worker(workers, env, tmp_path)
        sends = in_store(url, lambda s: open_tickets_with_replies(s, SENDS))
        queues = JobQueues(connection)
        job_ids = {(tid, eid): queues.send_outbound(tid, eid) for tid, eid in sends}

        # Kill while a request is surely at the stub (it answers after LATENCY_S).
        def mid_send() -> bool:
            if stub.accepted < SENT_BEFORE_KILL:
                return False
            return any(s.get("state") == Delivery.SENDING
                       and now_ms() - int(s.get("attempt_at_ms") or 0) > 300
                       for s in deliveries(url, sends))

        wait_until(mid_send, "a send in flight", timeout_s=60, interval_s=0.05,
                   workers=[first])
        killed = first.kill_tree()
        killed_at = time.monotonic()
        at_kill = deliveries(url, sends)
        in_flight = sum(s.get("state") == Delivery.SENDING for s in at_kill)
        assert any(pid == group for pid, group in killed.items()), \
            f"no work horse among the killed processes {killed}: the kill missed the send"
        assert in_flight >= 1

        second = start_worker(workers, env, tmp_path)

        def done() -> bool:
            states = deliveries(url, sends)
            if not all(settled(s) for s in states):
                return False
            # ...and RQ has filed the failed ones (bridge failed reads the registry).
            return all(
                Job.fetch(job_ids[key], connection=connection,
                          serializer=JSONSerializer).get_status() == JobStatus.FAILED
                for key, s in zip(sends, states, strict=True)
                if s.get("state") == Delivery.FAILED)

        wait_until(done, "every message sent or visibly failed",
                   timeout_s=SETTLE_TIMEOUT_S, interval_s=0.5, workers=[second])
        final = deliveries(url, sends)
        recovered_s = time.monotonic() - killed_at
        # The stub answers the killed request too (Twilio would have the message).
        stub.wait_until(lambda s: len(s.requests) >= SENDS, timeout_s=LATENCY_S + 5)
        messages = stub.messages
        assert stub.invalid == []

    bodies = Counter(m.get("Body") for m in messages)
    duplicates = sum(n - 1 for n in bodies.values() if n > 1)
    by_sid = {m.sid: m.get("Body") for m in messages}
    events = in_store(url, lambda s: _events(s, sends))
    sent = [key for key, s in zip(sends, final, strict=True)
            if s.get("provider_id") and s.get("state") != Delivery.FAILED]
    failed_sends = [(key, s) for key, s in zip(sends, final, strict=True)
                    if s.get("state") == Delivery.FAILED]
    lost = [key for key, s in zip(sends, final, strict=True) if not settled(s)]
    codes = Counter(s.get("error_code", "") for _, s in failed_sends)
    # The unconfirmed ones did reach "Twilio" (its answer was lost with the worker).
    reached = sum(bodies[events[eid].body] > 0 for (_, eid), _ in failed_sends)
    print(f"\n{SENDS} sends, worker SIGKILLed mid-send ({in_flight} in flight): "
          f"{len(sent)} sent, {len(failed_sends)} visibly failed "
          f"({', '.join(f'{c} x{n}' for c, n in codes.items()) or '-'}; {reached} of them "
          f"reached the stub), {len(lost)} lost, duplicates at the stub: {duplicates} "
          f"(the stub got {len(messages)} messages, {len(bodies)} distinct); "
          f"settled {recovered_s:.0f} s after the kill")

    assert not lost
    assert len(sent) + len(failed_sends) == SENDS
    assert duplicates <= in_flight
    assert duplicates == 0  # `sending` with no lock is never sent again blindly
    # Every accepted message is the stub's, with the event's own body.
    for (tid, eid), state in zip(sends, final, strict=True):
        if (tid, eid) in sent:
            assert by_sid[state["provider_id"]] == events[eid].body
    # Only what was in flight at the kill can have an unknown outcome, and it shows.
    assert len(failed_sends) <= in_flight
    assert set(codes) <= {"send_unconfirmed"}
    for (tid, eid), _ in failed_sends:
        event = events[eid]
        assert (event.delivery, event.error_code) == (Delivery.FAILED, "send_unconfirmed")
        assert at_kill[sends.index((tid, eid))].get("state") == Delivery.SENDING

    # `bridge failed` lists each of them (and nothing else).
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    listed = CliRunner().invoke(failed, ["--redis-url", url])
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if line.startswith("send-")]
    assert len(rows) == len(failed_sends), listed.output
    for (tid, eid), _ in failed_sends:
        row = next(line for line in rows if line.startswith(job_ids[(tid, eid)]))
        assert f"ticket {tid} {eid}" in row and "send_unconfirmed" in row, row
    registry = StartedJobRegistry(QUEUE_OUTBOUND, connection=connection,
                                  serializer=JSONSerializer)
    assert registry.get_job_ids() == []  # nothing left "started" by the dead worker


async def _events(store: TicketStore, sends: list[tuple[str, str]]) -> dict[str, Event]:
    return {eid: await store.get_event(tid, eid) for tid, eid in sends}


# ------------------------------------------------------------------ 2. the scheduler dies


def lock_holder_pid(connection: redis.Redis, queue: str) -> int:
    """The pid of the scheduler process holding RQ's scheduler lock for a queue (0: none)."""
    name = connection.get(RQScheduler.get_locking_key(queue))
    if not name:
        return 0
    pid = connection.hget(f"rq:scheduler:{name.decode()}", "pid")
    return int(pid) if pid else 0


async def solved_tickets_due_soon(store: TicketStore, count: int, due_in_s: int,
                                  connection: redis.Redis) -> tuple[list[tuple[str, str]], int]:
    """WhatsApp tickets solved (after_s - due_in_s) ago, each with its close timer set the
    way workers.automations.schedule_timer sets it. Returns [(ticket id, job id)] and the
    moment (ms) they are due."""
    automation = load_config(ROOT / "config" / "automations.toml").automation(AUTOMATION)
    assert automation is not None and automation.enabled
    queues = JobQueues(connection)
    out: list[tuple[str, str]] = []
    now = now_ms()
    solved_at = now + due_in_s * 1000 - automation.after_s * 1000
    for n in range(count):
        routed = await store.route_inbound(
            inbound_message(f"question {n}", sid=f"SM{n + 500:032x}", address=customer(500 + n),
                            at_ms=solved_at - 60_000),
            RatingSignal(), ChannelPolicy(), now_ms=solved_at - 60_000)
        assert routed.ticket_id
        ticket, _ = await store.update_ticket(routed.ticket_id, author="alice",
                                              now_ms=solved_at, status=Status.SOLVED)
        assert automation.should_schedule(ticket)
        anchor, due = automation.anchor_ms(ticket), automation.due_ms(ticket)
        assert due is not None
        job_id = queues.enqueue(
            QUEUE_HOUSEKEEPING, jobs.RUN_TIMER,
            {"ticket_id": ticket.id, "automation": AUTOMATION, "version": ticket.version,
             "anchor_ms": anchor, "due_ms": due},
            job_id=jobs.job_id("timer", ticket.id, AUTOMATION, str(anchor)),
            at=datetime.fromtimestamp(due / 1000, tz=UTC))
        out.append((ticket.id, job_id))
    return out, solved_at + automation.after_s * 1000


async def _closings(store: TicketStore, ticket_ids: list[str]
                    ) -> dict[str, tuple[Status, int, int]]:
    """Per ticket: its status, how many times it was closed, when (closed_at_ms)."""
    out: dict[str, tuple[Status, int, int]] = {}
    for tid in ticket_ids:
        ticket = await store.get_ticket(tid)
        cid = await store.contact_of(tid)
        closed = 0
        for _, fields in await store.redis.xrange(keys.events(cid, tid)):
            if fields[b"type"] == EventType.STATUS_CHANGED.value.encode() and \
                    json.loads(fields[b"data"]).get("to") == Status.CLOSED.value:
                closed += 1
        out[tid] = (ticket.status, closed, ticket.closed_at_ms)
    return out


def test_scheduler_holder_sigkilled_the_other_worker_runs_every_timer_once(
    private_redis: EmbeddedRedis, connection: redis.Redis, workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    url = private_redis.url
    env = worker_env(url, tmp_path, **FAST_RECOVERY)
    first = start_worker(workers, env, tmp_path)
    # The first worker takes every queue's scheduler lock; only then the second starts, so
    # the locks are not split between them.
    wait_until(lambda: all(lock_holder_pid(connection, q) for q in QUEUES_BY_PRIORITY),
               "the first worker's scheduler", timeout_s=30, workers=[first])
    second = start_worker(workers, env, tmp_path)
    wait_until(lambda: "*** Listening on" in second.output(), "the second worker",
               timeout_s=30, workers=[first, second])
    wait_until(lambda: "cleaning registries for queue" in second.output(),
               "the second worker's first maintenance", timeout_s=30, workers=[second])

    holders = {lock_holder_pid(connection, q) for q in QUEUES_BY_PRIORITY}
    assert len(holders) == 1
    [scheduler_pid] = holders
    by_worker = {w.pid: w for w in (first, second) if scheduler_pid in w.children()}
    assert list(by_worker) == [first.pid], "the scheduler lock holder is not a worker here"
    holder = by_worker[first.pid]
    # No scheduler process: it lost the race for the lock. A scheduler child would stay; a
    # job's child (the minute's sweep, forked by this worker) lives a fraction of a second.
    wait_until(lambda: second.children() == [], "the second worker without a child process",
               timeout_s=30, workers=[first, second])

    scheduled, due_ms = in_store(url, lambda s: solved_tickets_due_soon(s, TIMERS, DUE_IN_S,
                                                                         connection))
    due_at = time.monotonic() + (due_ms - now_ms()) / 1000
    ticket_ids = [tid for tid, _ in scheduled]
    registry = ScheduledJobRegistry(QUEUE_HOUSEKEEPING, connection=connection,
                                    serializer=JSONSerializer)
    assert scheduled_timers(registry) == TIMERS  # (the unsent-sends sweep is there too)
    holder.kill_tree()
    killed_at = time.monotonic()
    assert time.monotonic() < due_at, "the kill came after the timers were due"

    first_close = 0.0

    def all_closed() -> bool:
        nonlocal first_close
        states = in_store(url, lambda s: _closings(s, ticket_ids))
        closed = [t for t in states.values() if t[0] is Status.CLOSED]
        if closed and not first_close:
            first_close = time.monotonic()
        return len(closed) == TIMERS

    wait_until(all_closed, "every timer to fire on the surviving worker",
               timeout_s=TAKEOVER_TIMEOUT_S, interval_s=0.25, workers=[second])
    # Everything has run: no timer scheduled, nothing queued or started is left.
    wait_until(lambda: scheduled_timers(registry) == 0
               and StartedJobRegistry(QUEUE_HOUSEKEEPING, connection=connection,
                                     serializer=JSONSerializer).count == 0,
               "the housekeeping registries to drain", timeout_s=15, workers=[second])

    closings = in_store(url, lambda s: _closings(s, ticket_ids))
    runs = {job_id: len(Job.fetch(job_id, connection=connection,
                                  serializer=JSONSerializer).results())
            for _, job_id in scheduled}
    statuses = Counter(Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
                       .get_status() for _, job_id in scheduled)
    fired_logs = re.findall(rf"timer {AUTOMATION} on ticket (\S+) fired",
                            second.output() + holder.output())
    closed_twice = sum(1 for _, n, _ in closings.values() if n > 1)
    ran_twice = sum(1 for n in runs.values() if n > 1)
    takeover_s = first_close - killed_at
    late_s = first_close - due_at
    print(f"\n{TIMERS} timers, scheduler lock holder SIGKILLed {due_at - killed_at:.1f} s "
          f"before they were due: {sum(s is Status.CLOSED for s, _, _ in closings.values())} "
          f"tickets closed by the other worker, fired twice: {ran_twice} (runs), "
          f"{closed_twice} (closings); takeover {takeover_s:.1f} s after the kill, "
          f"timers {late_s:.1f} s late")

    assert all(status is Status.CLOSED for status, _, _ in closings.values())
    assert all(n == 1 for _, n, _ in closings.values()), closings
    assert all(n == 1 for n in runs.values()), runs
    assert statuses == Counter({JobStatus.FINISHED: TIMERS})
    assert sorted(fired_logs) == sorted(ticket_ids)
    assert not re.search(r"timer \S+ on ticket", holder.output())  # the dead one ran none
    assert FailedJobRegistry(QUEUE_HOUSEKEEPING, connection=connection).count == 0
    # The survivor holds the lock now.
    assert {lock_holder_pid(connection, q) for q in QUEUES_BY_PRIORITY} <= set(
        second.children())
