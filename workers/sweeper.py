"""The sweep: outbound events that were recorded but never reached a worker, and tickets
whose opening never reached the ticket list.

An outbound event (reply, macro, survey, automation) is recorded first and its send job
enqueued right after. Between the two, the web process or a worker can die, or Redis can
blip: the event is then in the thread, shown as `queued`, with no job behind it. Recording
it marked its ticket (TicketStore.update_ticket, keys.UNSENT); this sweep, every
SWEEP_INTERVAL_S on the housekeeping queue, looks at the tickets marked more than
SWEEP_GRACE_S ago:

- an outbound event without a delivery state (no worker has touched it) and without a send
  job is enqueued again, under the job id the first enqueue used (the send job is
  idempotent, so a job that did exist after all changes nothing); a failed or stopped job
  counts as an answer (`bridge failed` shows it, a person decides);
- unless it is older than SWEEP_MAX_AGE_S: a reply written hours ago must not reach the
  customer by surprise now. Its job is enqueued marked `found_late` and fails it visibly
  (`not_enqueued`, listed by `bridge failed`); `bridge retry` sends it if a person decides;
- a ticket with nothing left to wait for is unmarked, unless it was marked within the
  grace period (an event recorded then may still be on its way to the stream).

The same job then looks at the tickets opened more than SWEEP_GRACE_S ago (the change log's
routing entries, written by the routing script with the ticket itself): a web process that
died between the routing script and the index update left that ticket out of the lists and
unknown by id, and the customer's next messages, plain appends, would not index it either
(only a redelivery of the same message does). Such a ticket is indexed now, and logged.

Each sweep schedules the next one first (RQ's scheduler; one job per moment, whichever
worker asks), and every worker asks for it again at each of its maintenance passes (at
start, then every BRIDGE_WORKER_MAINTENANCE_INTERVAL_S), so the chain survives a sweep that
could not schedule its successor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bridge.core.changes import OPENING_ACTIONS, Change, ChangeKind
from bridge.jobs import JobQueues, job_id
from bridge.store.changelog import PARTITIONS_PER_ROUND_TRIP, REPAIR_CONSUMER, ChangeLog
from bridge.store.tickets import TicketStore

log = logging.getLogger("workers.sweeper")

SWEEP_INTERVAL_S = 60
# A send job is enqueued milliseconds after its event is recorded: an event this old
# without a job and without a delivery state was stranded.
SWEEP_GRACE_S = 60
SWEEP_MAX_AGE_S = 6 * 3600
# Work per sweep; what is left waits for the next one (oldest marks first).
SWEEP_BUDGET_S = 30.0
LISTING_BUDGET_S = 10.0
# The listing reads every change log entry (the openings sit among the appends) a few
# partitions a round trip (bridge.store.changelog.PARTITIONS_PER_ROUND_TRIP), each group
# checked before the next, with a pause between: Redis answers the webhooks in between.
# One pipeline over the 256 partitions, 1000 entries each, had Redis build up to 256,000
# entries in one go, and a sweep in the ingest benchmark's new-conversation latency phase
# showed as a p99 of 91 ms (a second client's PING beside a sweep of 50,000 openings:
# 44 ms, and 3.8 ms read this way).
LISTING_ENTRIES_PER_PARTITION = 50
LISTING_PAUSE_S = 0.002


@dataclass(frozen=True)
class SweepReport:
    tickets: int  # marked tickets looked at
    requeued: list[tuple[str, str]]  # (ticket id, event id) enqueued again
    expired: list[tuple[str, str]]  # (ticket id, event id) too old: enqueued to fail visibly
    waiting: int  # events without a state whose job is queued or running
    cleared: int  # tickets unmarked

    def as_dict(self) -> dict[str, Any]:
        return {"tickets": self.tickets, "requeued": [list(p) for p in self.requeued],
                "expired": [list(p) for p in self.expired], "waiting": self.waiting,
                "cleared": self.cleared}


async def sweep_unsent(store: TicketStore, queues: JobQueues, *, now_ms: int,
                       grace_s: int = SWEEP_GRACE_S, max_age_s: int = SWEEP_MAX_AGE_S,
                       budget_s: float = SWEEP_BUDGET_S) -> SweepReport:
    cutoff_ms = now_ms - grace_s * 1000
    too_old_ms = now_ms - max_age_s * 1000
    marked = await store.unsent_tickets(marked_before_ms=cutoff_ms)
    requeued: list[tuple[str, str]] = []
    expired: list[tuple[str, str]] = []
    waiting = cleared = looked = 0
    stop_at = time.monotonic() + budget_s
    for ticket_id, marked_ms in marked:
        if time.monotonic() > stop_at:
            break  # the rest on the next sweep, oldest first again
        looked += 1
        # Stream ids come from Redis's clock, marks from the recorder's: a grace of slack.
        pending = await store.undelivered_events(ticket_id, since_ms=marked_ms - grace_s * 1000)
        unresolved = False
        for event_id, at_ms in pending:
            if at_ms > cutoff_ms:
                unresolved = True  # just recorded: its own enqueue is (probably) under way
                continue
            status = await asyncio.to_thread(_send_job_status, queues, ticket_id, event_id)
            if status in _ACTIVE:
                waiting += 1
                unresolved = True
                continue
            if status is not None:
                continue  # failed or stopped: visible in `bridge failed`, a person decides
            late = at_ms < too_old_ms
            await asyncio.to_thread(queues.send_outbound, ticket_id, event_id, found_late=late)
            if late:
                expired.append((ticket_id, event_id))
                log.error("ticket %s event %s: never enqueued and %.1f h old: its job will "
                          "fail it (not_enqueued) rather than send it", ticket_id, event_id,
                          (now_ms - at_ms) / 3_600_000)
            else:
                requeued.append((ticket_id, event_id))
                log.warning("ticket %s event %s: recorded %.0f s ago and never enqueued; "
                            "enqueued now", ticket_id, event_id, (now_ms - at_ms) / 1000)
            unresolved = True  # until its job has run
        if not unresolved:
            cleared += await store.clear_unsent(ticket_id, checked_before_ms=cutoff_ms)
    return SweepReport(tickets=looked, requeued=requeued, expired=expired,
                       waiting=waiting, cleared=cleared)


async def list_unlisted(store: TicketStore, *, now_ms: int, grace_s: int = SWEEP_GRACE_S,
                        budget_s: float = LISTING_BUDGET_S,
                        batch: int = LISTING_ENTRIES_PER_PARTITION,
                        partitions_per_read: int = PARTITIONS_PER_ROUND_TRIP,
                        pause_s: float = LISTING_PAUSE_S) -> list[str]:
    """Index the tickets opened before the grace period that the lists do not know, with
    the ticket each follows up (closed by the opening); the ids indexed now (each opening
    one a web process that died mid-request). The openings come from the change log (the
    routing script writes them with the ticket), read by the `repair` consumer from its own
    position, a grace period behind the writers, `partitions_per_read` partitions and
    `batch` entries per partition a round trip, within the time budget."""
    change_log = ChangeLog(store.redis)
    positions = await change_log.positions(REPAIR_CONSUMER)
    partitions = sorted(positions)
    groups = [partitions[i:i + partitions_per_read]
              for i in range(0, len(partitions), partitions_per_read)]
    listed: list[str] = []
    stop_at = time.monotonic() + budget_s
    pending = set(range(len(groups)))  # groups that may have entries left to read
    while pending and time.monotonic() < stop_at:
        for g in sorted(pending):
            read = await change_log.read_until({p: positions[p] for p in groups[g]},
                                               until_ms=now_ms - grace_s * 1000, count=batch)
            listed += await _list_openings(store, read.changes)
            if not read.positions:
                pending.discard(g)  # read up to the grace period
                continue
            positions.update(read.positions)
            await change_log.save_positions(REPAIR_CONSUMER, read.positions)
            await asyncio.sleep(pause_s)
            if time.monotonic() >= stop_at:
                break
    return listed


async def _list_openings(store: TicketStore, changes: list[Change]) -> list[str]:
    openings = [(c.contact_id, c.ticket_id, c.previous_ticket_id)
                for c in changes if c.kind is ChangeKind.ROUTED and c.action in OPENING_ACTIONS]
    listed = await store.index_if_unlisted(openings)
    for ticket_id in listed:
        log.warning("ticket %s was not (or not correctly) in the ticket lists: its opening "
                    "was interrupted before the index update; listed now", ticket_id)
    return listed


# The send job will still run (or is running): its event gets a delivery state then.
_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED,
                     JobStatus.DEFERRED})


def _send_job_status(queues: JobQueues, ticket_id: str, event_id: str) -> JobStatus | None:
    """The event's send job's status; None when there is no such job."""
    try:
        job = Job.fetch(job_id("send", ticket_id, event_id), connection=queues.connection,
                        serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    return job.get_status(refresh=False)
