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
# Jobs a transaction: RQ's enqueue is several commands a job, and Redis serves nobody else
# while it runs a transaction (MULTI ... EXEC). 4,000 jobs in one kept another client's
# PING waiting 36.6 ms; by 500, 9.2 ms; by 100, 4.0 ms, in the same total time (~0.4 s).
ENQUEUE_CHUNK = 100

_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# The set of registered RQ workers (dead ones leave it at the next maintenance pass).
WORKERS_KEY = REDIS_WORKER_KEYS


@dataclass(frozen=True)
class JobSpec:
    """A job to enqueue, named so that handing the same change on twice names the same job."""

    queue: str
    func: str
    payload: dict[str, Any]
    job_id: str
    retry: Retry | None = None


def trigger_job(ticket_id: str, trigger: str, version: int, change_id: str) -> JobSpec:
    """The job that runs a trigger's rules for one change; `change_id` (the change log
    entry, or the routed message's event) is also the rules' at-most-once marker."""
    return JobSpec(QUEUE_EVENTS, ON_TICKET_EVENT,
                   {"ticket_id": ticket_id, "trigger": trigger, "version": version,
                    "event_id": change_id},
                   job_id("trg", ticket_id, change_id, trigger), CRASH_RETRY)


def template_fallback_job(ticket_id: str, event_id: str) -> JobSpec:
    """The send job again for an event whose free-form message Twilio refused with 63016
    (outside the 24-hour window): it sends the approved template the event names."""
    return JobSpec(QUEUE_OUTBOUND, SEND_OUTBOUND, {"ticket_id": ticket_id, "event_id": event_id},
                   job_id("send", ticket_id, event_id, "fallback"), CRASH_RETRY)


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

    def enqueue_many(self, specs: list[JobSpec]) -> None:
        """Enqueue jobs a transaction of ENQUEUE_CHUNK at a time (the relay's batches). A
        job enqueued twice (a batch handed on again) runs twice in effect once: the trigger
        rules claim a marker per change."""
        for start in range(0, len(specs), ENQUEUE_CHUNK):
            with self.connection.pipeline() as pipe:
                for spec in specs[start:start + ENQUEUE_CHUNK]:
                    q = self.queues[spec.queue]
                    q.enqueue_many([Queue.prepare_data(
                        spec.func, (spec.payload,), job_id=spec.job_id, retry=spec.retry,
                        failure_ttl=30 * 24 * 3600)], pipeline=pipe)
                pipe.execute()

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
