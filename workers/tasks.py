"""RQ entry points, named in bridge.jobs, and the job bodies behind them.

Payloads are JSON dicts (RQ's JSON serializer); tests/test_contract.py pins the names.
Each job takes this process's runtime (workers.runtime: one event loop, the Redis pools,
the sender), builds what its service needs from it and runs the service. The services
(workers.outbound, workers.automations, workers.sweeper) know nothing of the runtime: imports
point from here to them, never back (tests/test_layers.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from rq import get_current_job
from rq.job import Job

from bridge.jobs import JobQueues
from workers import runtime
from workers.automations import Deps, handle_due_timer, handle_ticket_event, worker_deps
from workers.outbound import FAILED, RETRY, SendOutcome
from workers.sweeper import SWEEP_INTERVAL_S, list_unlisted
from workers.sweeper import sweep_unsent as sweep_unsent_events

log = logging.getLogger("workers.tasks")


def send_outbound(payload: dict[str, Any]) -> dict[str, Any]:
    """Send one recorded outbound event (reply, macro, survey, notice) to its channel.
    Payload {"ticket_id", "event_id"[, "found_late"]}."""
    try:
        ticket_id, event_id = _payload_ids(payload)
    except ValueError as exc:
        return finish_job(SendOutcome(str(payload.get("ticket_id", "")),
                                      str(payload.get("event_id", "")), FAILED,
                                      error_code="bad_payload", error_message=str(exc)),
                          get_current_job())
    rt = runtime.current()
    found_late = payload.get("found_late") is True
    outcome = rt.run(rt.outbound.send(ticket_id, event_id, found_late=found_late))
    return finish_job(outcome, get_current_job())


def on_ticket_event(payload: dict[str, Any]) -> dict[str, Any]:
    """Evaluate triggers for a ticket event and schedule the automations' timers."""
    rt, deps = _automation_deps()
    result: dict[str, Any] = rt.run(handle_ticket_event(deps, payload))
    return result


def run_timer(payload: dict[str, Any]) -> dict[str, Any]:
    """A timed automation came due; it does nothing if the ticket changed since it was set."""
    rt, deps = _automation_deps()
    result: dict[str, Any] = rt.run(handle_due_timer(deps, payload))
    return result


def sweep_unsent(payload: dict[str, Any]) -> dict[str, Any]:
    """Enqueue again the recorded sends that never reached a worker, and list the tickets
    whose opening was interrupted before the index update (workers/sweeper.py). The next
    sweep is scheduled first."""
    rt = runtime.current()
    interval_s = int(payload.get("interval_s") or SWEEP_INTERVAL_S)
    queues = JobQueues(rt.redis)
    queues.schedule_sweep(interval_s)
    now_ms = int(time.time() * 1000)
    report = rt.run(sweep_unsent_events(rt.store, queues, now_ms=now_ms))
    if report.requeued:
        log.warning("unsent-sends sweep: %d send(s) enqueued again", len(report.requeued))
    listed = rt.run(list_unlisted(rt.store, now_ms=now_ms))
    return {**report.as_dict(), "listed": listed}


# ------------------------------------------------------------------ automations' dependencies

_automations: tuple[runtime.Runtime, Deps] | None = None


def _automation_deps() -> tuple[runtime.Runtime, Deps]:
    """This process's runtime and the automation dependencies built on it (once per
    runtime: a forked child builds its own)."""
    global _automations
    rt = runtime.current()
    if _automations is None or _automations[0] is not rt:
        _automations = (rt, worker_deps(rt.store, rt.aredis, rt.redis, rt.settings.config_dir,
                                         token_agents=frozenset(rt.settings.agent_tokens)))
    return rt, _automations[1]


# ------------------------------------------------------------------ send outcomes in RQ terms


class SendRetry(Exception):
    """Raised so that RQ runs the job again after the delay the job chose."""


class SendFailed(Exception):
    """Raised so that the job lands in RQ's FailedJobRegistry with its reason
    (`bridge failed` lists it, `bridge retry` re-sends it)."""


def _payload_ids(payload: Mapping[str, Any]) -> tuple[str, str]:
    ticket_id, event_id = payload.get("ticket_id"), payload.get("event_id")
    if not isinstance(ticket_id, str | int) or not isinstance(event_id, str) or not event_id:
        raise ValueError(f"send_outbound needs ticket_id and event_id, got {dict(payload)!r}")
    return str(ticket_id), event_id


def finish_job(outcome: SendOutcome, job: Job | None) -> dict[str, Any]:
    """Turn an outcome into what RQ understands: a result, a retry or a failure.

    RQ's retry settings come from the enqueuer (bridge.jobs.CRASH_RETRY) and are meant for a
    worker that died mid-job. For errors the job understands it steers the retry itself on
    the running job: one more run after its own delay (the attempt cap is the `attempts`
    count kept in Redis), or none at all for a permanent failure.
    """
    if outcome.action == RETRY:
        if job is not None:
            # RQ takes one retry off after this; adding one keeps the crash budget intact.
            job.retries_left = (job.retries_left or 0) + 1
            job.retry_intervals = [outcome.retry_in_s or 0]
        raise SendRetry(f"{outcome.error_code}: {outcome.error_message} "
                        f"(ticket {outcome.ticket_id} event {outcome.event_id})")
    if outcome.action == FAILED:
        if job is not None:
            job.retries_left = 0  # running it again cannot help
        raise SendFailed(f"{outcome.error_code}: {outcome.error_message} "
                         f"(ticket {outcome.ticket_id} event {outcome.event_id})")
    return outcome.as_dict()
