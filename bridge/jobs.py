"""The web process's only edge to RQ: job names, queues and payloads.

`bridge` never imports `workers`: jobs are enqueued by dotted name with JSON payloads, and
tests/test_contract.py checks that every name here imports to a callable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer
from rq.worker_registration import REDIS_WORKER_KEYS

# Queues in the order a worker serves them: agent replies before surveys and housekeeping.
QUEUE_OUTBOUND = "bridge-outbound"
QUEUE_EVENTS = "bridge-events"
QUEUE_SURVEYS = "bridge-surveys"
QUEUE_HOUSEKEEPING = "bridge-housekeeping"
QUEUES_BY_PRIORITY = (QUEUE_OUTBOUND, QUEUE_EVENTS, QUEUE_SURVEYS, QUEUE_HOUSEKEEPING)

# payload: {"ticket_id": str, "event_id": str, "found_late"?: true}
SEND_OUTBOUND = "workers.tasks.send_outbound"
# payload: {"ticket_id": str, "trigger": str, "version": int, "event_id": str}
ON_TICKET_EVENT = "workers.tasks.on_ticket_event"
# payload: {"ticket_id": str, "automation": str, "version": int}
RUN_TIMER = "workers.tasks.run_timer"

# payload: {"interval_s": int}; runs every interval_s and schedules its own next run.
SWEEP_UNSENT = "workers.tasks.sweep_unsent"

JOB_NAMES = (SEND_OUTBOUND, ON_TICKET_EVENT, RUN_TIMER, SWEEP_UNSENT)

# RQ's retry for a job that never finished: its worker died mid-job, or its pop was lost
# and RQ's maintenance failed it from the intermediate list (workers/dequeue.py). Safe for
# these jobs: a send checks its delivery state under a lock, triggers and timers claim
# their marker before acting (at most once), and a timer checks its ticket's moment.
# Send failures that created no message (429, connect errors) are retried by the send job
# itself, not by this; ambiguous ones (5xx, timeouts) are not retried at all.
CRASH_RETRY = Retry(max=3, interval=[5, 30, 120])

_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# The set of registered RQ workers (dead ones leave it at the next maintenance pass).
WORKERS_KEY = REDIS_WORKER_KEYS


@dataclass(frozen=True)
class QueueKeys:
    """Where RQ keeps one queue's jobs, by state: lists `queued` (waiting) and `dequeuing`
    (taken by a worker that has not started them: workers/dequeue.py), sorted sets
    `started`, `scheduled` (score: due time, s) and `failed`."""

    queue: str
    queued: str
    dequeuing: str
    started: str
    scheduled: str
    failed: str


def job_id(*parts: str) -> str:
    """RQ job ids allow only [A-Za-z0-9_-]; stream ids carry '-' already, ':' is replaced."""
    return _JOB_ID_UNSAFE.sub("_", "-".join(parts))


class JobQueues:
    """Synchronous (RQ is); the web process calls these through asyncio.to_thread."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self.queues = {
            name: Queue(name, connection=connection, serializer=JSONSerializer)
            for name in QUEUES_BY_PRIORITY
        }

    def key_names(self) -> list[QueueKeys]:
        return [QueueKeys(queue=name, queued=q.key, dequeuing=q.intermediate_queue_key,
                          started=q.started_job_registry.key,
                          scheduled=q.scheduled_job_registry.key,
                          failed=q.failed_job_registry.key)
                for name, q in self.queues.items()]

    def enqueue(
        self, queue: str, func: str, payload: dict[str, Any], *, job_id: str | None = None,
        retry: Retry | None = None, at: datetime | None = None,
    ) -> str:
        q = self.queues[queue]
        kwargs: dict[str, Any] = {"job_id": job_id, "retry": retry, "failure_ttl": 30 * 24 * 3600}
        if at is not None:
            job = q.enqueue_at(at.astimezone(UTC), func, payload, **kwargs)
        else:
            job = q.enqueue(func, payload, **kwargs)
        return str(job.id)

    def send_outbound(self, ticket_id: str, event_id: str, *, found_late: bool = False
                      ) -> str:
        """found_late: enqueued by the unsent-sends sweep for an event too old to send
        unannounced (the job fails it visibly unless it was re-driven)."""
        payload: dict[str, Any] = {"ticket_id": ticket_id, "event_id": event_id}
        if found_late:
            payload["found_late"] = True
        return self.enqueue(
            QUEUE_OUTBOUND, SEND_OUTBOUND, payload,
            job_id=job_id("send", ticket_id, event_id), retry=CRASH_RETRY,
        )

    def send_fallback(self, ticket_id: str, event_id: str) -> str:
        """Run the send again after Twilio reported 63016 for the free-form message: the job
        sends the event's approved template. Its own job id (the first send's job may still
        be finishing) and the crash retry every send carries."""
        return self.enqueue(
            QUEUE_OUTBOUND, SEND_OUTBOUND, {"ticket_id": ticket_id, "event_id": event_id},
            job_id=job_id("send", ticket_id, event_id, "fallback"), retry=CRASH_RETRY,
        )

    def schedule_sweep(self, interval_s: int, *, after: datetime | None = None) -> str:
        """The unsent-sends sweep at the next multiple of interval_s. Every worker asks for
        it at start and every sweep for its successor: the job id is the moment, so they
        all name the same job and one runs."""
        now = (after or datetime.now(UTC)).timestamp()
        due = (int(now) // interval_s + 1) * interval_s
        return self.enqueue(
            QUEUE_HOUSEKEEPING, SWEEP_UNSENT, {"interval_s": interval_s},
            job_id=job_id("sweep-unsent", str(due)),
            at=datetime.fromtimestamp(due, UTC),
        )

    def ticket_event(self, ticket_id: str, trigger: str, version: int, event_id: str = "") -> str:
        return self.enqueue(
            QUEUE_EVENTS, ON_TICKET_EVENT,
            {"ticket_id": ticket_id, "trigger": trigger, "version": version, "event_id": event_id},
            retry=CRASH_RETRY,
        )
