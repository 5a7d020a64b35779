"""Failed RQ jobs (sends, timers, triggers) and re-running them: what `bridge failed` /
`bridge retry` and the workspace's operations page show and do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bridge.core.tickets import Delivery
from bridge.jobs import QUEUES_BY_PRIORITY, SEND_OUTBOUND
from bridge.store.connection import async_redis
from bridge.store.tickets import NotFound, TicketStore
from config.settings import Settings


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    func: str
    payload: dict[str, Any]
    failed_at: datetime | None
    error: str

    @property
    def target(self) -> str:
        if "ticket_id" in self.payload:
            event = self.payload.get("event_id") or self.payload.get("automation") or ""
            return f"ticket {self.payload['ticket_id']}" + (f" {event}" if event else "")
        return "-"


def _queues(connection: redis.Redis) -> list[Queue]:
    return [Queue(name, connection=connection, serializer=JSONSerializer)
            for name in QUEUES_BY_PRIORITY]


def _error_line(job: Job) -> str:
    """The exception line of the job's last failure (its traceback's last line)."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "failed (no error recorded: retries exhausted or worker lost)"
    # "workers.tasks.SendFailed: ..." -> "SendFailed: ..."
    kind, sep, message = lines[-1].strip().partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}{sep}{message}"


def failed_jobs(connection: redis.Redis) -> list[FailedJob]:
    """Every job in the bridge queues' FailedJobRegistry, most recent failure first."""
    found: list[FailedJob] = []
    for queue in _queues(connection):
        ids = queue.failed_job_registry.get_job_ids(desc=True)
        for job in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer):
            if job is None:  # expired between the two reads
                continue
            args = job.args
            payload = args[0] if args and isinstance(args[0], dict) else {}
            found.append(FailedJob(
                id=job.id, queue=queue.name, func=job.func_name or "?", payload=payload,
                failed_at=job.ended_at, error=_error_line(job),
            ))
    found.sort(key=lambda j: j.failed_at.timestamp() if j.failed_at else 0.0, reverse=True)
    return found


async def reopen_delivery(store: TicketStore, ticket_id: str, event_id: str, *,
                          now_ms: int) -> bool:
    """Let a failed send go again: the job skips events whose delivery is settled, so a
    re-driven send starts from `queued` with a fresh attempt budget. A message the provider
    accepted is never reopened. Returns True when the state was reset."""
    try:
        state = await store.delivery_state(ticket_id, event_id)
    except NotFound:
        return False
    current = state.get("state", "")
    accepted = current in (Delivery.SENT, Delivery.DELIVERED, Delivery.READ) or (
        current in (Delivery.QUEUED, Delivery.SENDING) and state.get("provider_id"))
    if accepted or not current or (current == Delivery.QUEUED and not state.get("error_code")):
        return False
    record = {"state": Delivery.QUEUED.value, "attempts": "0", "redriven_at_ms": str(now_ms),
              "previous_state": current,
              "previous_attempts": state.get("attempts", "0")}
    for name in ("error_code", "error_message"):
        if state.get(name):
            record[f"previous_{name}"] = state[name]
    await store.set_delivery(ticket_id, event_id, record)
    return True


def requeue_failed(connection: redis.Redis, store_url: str, settings: Settings,
                   job_ids: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Requeue the given failed jobs (None: all). Returns (requeued, not found)."""
    by_id = {j.id: j for j in failed_jobs(connection)}
    wanted = list(by_id) if job_ids is None else list(dict.fromkeys(job_ids))
    missing = [i for i in wanted if i not in by_id]
    todo = [by_id[i] for i in wanted if i in by_id]
    sends = [(str(j.payload.get("ticket_id", "")), str(j.payload.get("event_id", "")))
             for j in todo if j.func == SEND_OUTBOUND]

    async def reopen_all() -> None:
        client = async_redis(settings, store_url)
        try:
            store = TicketStore(client)
            now_ms = int(time.time() * 1000)
            for tid, eid in sends:
                if tid and eid:
                    await reopen_delivery(store, tid, eid, now_ms=now_ms)
        finally:
            await client.aclose()

    if sends:
        asyncio.run(reopen_all())
    queues = {q.name: q for q in _queues(connection)}
    done: list[str] = []
    for job in todo:
        queues[job.queue].failed_job_registry.requeue(job.id)
        done.append(job.id)
    return done, missing
