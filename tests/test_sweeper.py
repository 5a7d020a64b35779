"""Sends that were recorded but never enqueued: the API still answers 202, and the
unsent-sends sweep enqueues them (or fails them visibly when found too late)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import TestClient
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from bridge.commands.outbound import failed_jobs
from bridge.jobs import QUEUE_HOUSEKEEPING, QUEUE_OUTBOUND, SWEEP_UNSENT, JobQueues, job_id
from bridge.store import keys
from bridge.store.outbox import Outbox
from bridge.store.tickets import TicketStore
from bridge.web.keys import queues_key
from tests.conftest import AGENT_TOKEN, CONTACT_KEY
from tests.factories import inbound_form, inbound_message, post_signed, routed_reply
from tests.faults.workers_support import burst
from workers.sweeper import SWEEP_GRACE_S, SWEEP_MAX_AGE_S, sweep_unsent

AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
# The customer of the replies the sweep tests record directly (not inbound_form's sender).
OTHER_CUSTOMER = "whatsapp:+33611112222"
Client = TestClient[Any, Any]


def now_ms() -> int:
    return int(time.time() * 1000)


def _enqueue_fails(ticket_id: str, event_id: str, *, found_late: bool = False) -> str:
    """RQ unreachable for sends (Redis blipped right after the event was recorded)."""
    raise redis.ConnectionError("connection reset by peer")


def _outbound_jobs(connection: redis.Redis) -> list[str]:
    return Queue(QUEUE_OUTBOUND, connection=connection, serializer=JSONSerializer).job_ids


async def _ticket_with_customer_message(client: Client) -> str:
    assert (await post_signed(client, "/webhooks/twilio", inbound_form("Bonjour"))).status == 200
    listing = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    return str(listing["tickets"][0]["id"])


async def test_a_reply_that_could_not_be_enqueued_is_accepted_then_swept_and_sent(
    client: Client, sync_redis: redis.Redis, aredis: redis.asyncio.Redis, redis_url: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    tid = await _ticket_with_customer_message(client)
    monkeypatch.setattr(client.app[queues_key], "send_outbound", _enqueue_fails)
    answer = await client.post(f"/api/v1/tickets/{tid}/replies", json={"body": "On regarde"},
                               headers=AGENT)
    # Recorded: answering 5xx would invite a retry that records the reply twice.
    assert answer.status == 202
    event = await answer.json()
    assert event["delivery"] == "queued"
    assert _outbound_jobs(sync_redis) == []
    assert sync_redis.zscore(keys.UNSENT, tid) is not None

    store = TicketStore(aredis, contact_key=CONTACT_KEY.encode())
    queues = JobQueues(sync_redis)
    # Within the grace period the sweep leaves it alone (its own enqueue may be under way).
    early = await sweep_unsent(store, queues, now_ms=now_ms())
    assert early.requeued == [] and _outbound_jobs(sync_redis) == []

    later = now_ms() + (SWEEP_GRACE_S + 5) * 1000
    report = await sweep_unsent(store, queues, now_ms=later)
    assert report.requeued == [(tid, event["id"])]
    assert _outbound_jobs(sync_redis) == [job_id("send", tid, event["id"])]
    # Not twice: the job exists now.
    again = await sweep_unsent(store, queues, now_ms=later)
    assert again.requeued == [] and again.waiting == 1
    assert len(_outbound_jobs(sync_redis)) == 1

    # A worker sends it (to the local outbox); the next sweep unmarks the ticket.
    await asyncio.to_thread(burst, redis_url, tmp_path)
    assert [e.body for e in await Outbox(aredis).latest()] == ["On regarde"]
    sent = await (await client.get(f"/api/v1/tickets/{tid}/events", headers=AGENT)).json()
    reply = next(e for e in sent["events"] if e["id"] == event["id"])
    assert reply["delivery"] == "delivered"  # what the local outbox reports
    done = await sweep_unsent(store, queues, now_ms=later)
    assert done.cleared == 1
    assert sync_redis.zscore(keys.UNSENT, tid) is None


async def test_events_with_a_delivery_state_are_not_requeued(
    store: TicketStore, sync_redis: redis.Redis,
) -> None:
    tid, eid = await routed_reply(store, message=inbound_message(address=OTHER_CUSTOMER))
    await store.set_delivery(tid, eid, {"state": "queued", "provider_id": "SM" + "b" * 32})
    report = await sweep_unsent(store, JobQueues(sync_redis),
                                now_ms=now_ms() + (SWEEP_GRACE_S + 5) * 1000)
    assert report.requeued == [] and report.cleared == 1
    assert _outbound_jobs(sync_redis) == []


async def test_a_young_mark_is_kept_even_if_its_event_is_not_visible_yet(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    tid, eid = await routed_reply(store, message=inbound_message(address=OTHER_CUSTOMER))
    await store.set_delivery(tid, eid, {"state": "sent"})
    later = now_ms() + (SWEEP_GRACE_S + 5) * 1000
    # A second reply is being recorded: marked (intent first), its event not written yet.
    await store._mark(keys=[keys.UNSENT, keys.UNSENT_MARKS], args=[tid, later - 1000])
    report = await sweep_unsent(store, JobQueues(sync_redis), now_ms=later)
    # The sweep saw nothing pending, but the mark is younger than the grace period.
    assert report.tickets == 1 and report.cleared == 0
    assert sync_redis.zscore(keys.UNSENT, tid) is not None
    # Once that is old news, the mark goes.
    assert (await sweep_unsent(store, JobQueues(sync_redis),
                               now_ms=later + SWEEP_GRACE_S * 1000)).cleared == 1
    assert sync_redis.zscore(keys.UNSENT, tid) is None


async def test_a_failed_send_job_is_an_answer_not_something_to_wait_for(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    tid, eid = await routed_reply(store, message=inbound_message(address=OTHER_CUSTOMER))
    queues = JobQueues(sync_redis)
    job = Job.fetch(queues.send_outbound(tid, eid), connection=sync_redis,
                    serializer=JSONSerializer)
    # The job died before it recorded anything (RQ gave up on it).
    Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer).remove(job.id)
    job.set_status(JobStatus.FAILED)
    later = now_ms() + (SWEEP_GRACE_S + 5) * 1000
    report = await sweep_unsent(store, queues, now_ms=later)
    assert report.requeued == [] and report.waiting == 0 and report.cleared == 1
    assert _outbound_jobs(sync_redis) == []


async def test_many_marked_tickets_are_all_looked_at(store: TicketStore,
                                                     sync_redis: redis.Redis) -> None:
    for n in range(30):
        await store._mark(keys=[keys.UNSENT, keys.UNSENT_MARKS], args=[f"gone{n}", 1000 + n])
    report = await sweep_unsent(store, JobQueues(sync_redis), now_ms=now_ms())
    assert report.tickets == 30 and report.cleared == 30  # (tickets that no longer exist)
    assert sync_redis.zcard(keys.UNSENT) == 0


async def test_a_send_found_hours_late_fails_visibly_instead_of_going_out(
    store: TicketStore, sync_redis: redis.Redis, redis_url: str, tmp_path: Path,
) -> None:
    tid, eid = await routed_reply(store, message=inbound_message(address=OTHER_CUSTOMER))
    much_later = now_ms() + (SWEEP_MAX_AGE_S + 60) * 1000
    report = await sweep_unsent(store, JobQueues(sync_redis), now_ms=much_later)
    assert report.expired == [(tid, eid)] and report.requeued == []
    await asyncio.to_thread(burst, redis_url, tmp_path)
    assert await Outbox(store.redis).latest() == []  # nothing reached the customer
    state = await store.delivery_state(tid, eid)
    assert (state["state"], state["error_code"]) == ("failed", "not_enqueued")
    [listed] = [j for j in failed_jobs(sync_redis) if j.id == job_id("send", tid, eid)]
    assert "not_enqueued" in listed.error


def test_sweeps_schedule_one_successor_whoever_asks(sync_redis: redis.Redis) -> None:
    queues = JobQueues(sync_redis)
    # One moment for both calls (the clock could cross a minute between them), 30 s into a
    # minute that is still to come.
    now = datetime.fromtimestamp((int(time.time()) // 60 + 2) * 60 + 30, UTC)
    first = queues.schedule_sweep(60, after=now)
    second = queues.schedule_sweep(60, after=now)  # another worker starting in that minute
    assert first == second
    registry = ScheduledJobRegistry(QUEUE_HOUSEKEEPING, connection=sync_redis,
                                    serializer=JSONSerializer)
    assert registry.get_job_ids() == [first]
    job = Job.fetch(first, connection=sync_redis, serializer=JSONSerializer)
    assert job.func_name == "workers.tasks.sweep_unsent"
    due = registry.get_scheduled_time(first).timestamp()
    assert due % 60 == 0 and due - now.timestamp() == 30


def test_the_sweep_job_runs_in_a_worker_and_schedules_its_successor(
    sync_redis: redis.Redis, redis_url: str, tmp_path: Path,
) -> None:
    job = JobQueues(sync_redis).enqueue(QUEUE_HOUSEKEEPING, SWEEP_UNSENT, {"interval_s": 60})
    burst(redis_url, tmp_path)
    done = Job.fetch(job, connection=sync_redis, serializer=JSONSerializer)
    assert done.return_value() == {"tickets": 0, "requeued": [], "expired": [], "waiting": 0,
                                   "cleared": 0, "listed": []}
    registry = ScheduledJobRegistry(QUEUE_HOUSEKEEPING, connection=sync_redis,
                                    serializer=JSONSerializer)
    [successor] = registry.get_job_ids()
    assert successor.startswith("sweep-unsent-")


def test_worker_maintenance_keeps_the_sweep_scheduled(sync_redis: redis.Redis) -> None:
    from workers.__main__ import build_worker

    registry = ScheduledJobRegistry(QUEUE_HOUSEKEEPING, connection=sync_redis,
                                    serializer=JSONSerializer)
    burst = build_worker(sync_redis, fork=False)
    burst.run_maintenance_tasks()  # a --burst run: no sweep
    assert registry.get_job_ids() == []
    worker = build_worker(sync_redis, fork=False)
    worker.ensure_sweep = True
    worker.run_maintenance_tasks()
    [sweep] = registry.get_job_ids()
    assert sweep.startswith("sweep-unsent-")
