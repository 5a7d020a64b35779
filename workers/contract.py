"""Workers run the contract's jobs only.

An RQ job names its function by dotted path and RQ imports whatever it names: anyone who can
write to the queues' Redis could otherwise run `os.system` in a worker. A worker checks the
name against bridge/jobs.py's JOB_NAMES before anything is imported or forked, and fails a
job outside it (never retried) with a log line saying why.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.worker.base import WorkerStatus

from bridge.jobs import JOB_NAMES

log = logging.getLogger("workers")

CONTRACT_JOBS = frozenset(JOB_NAMES)


def refusal(job: Job, allowed: frozenset[str]) -> str:
    """Why the job must not run, or "" when it may. Reads the job's stored fields only
    (JSON, no import)."""
    name = job.func_name
    if name not in allowed:
        return f"function {name!r} is not a job of the contract (bridge/jobs.py)"
    # Callbacks are dotted names RQ imports too; the contract sets none, nor webhooks.
    callbacks = [c for c in (job._success_callback_name, job._failure_callback_name,
                             job._stopped_callback_name) if c]
    if callbacks:
        return f"callbacks {callbacks!r} are not part of the contract"
    if getattr(job, "webhooks", None):
        return "webhooks are not part of the contract"
    return ""


class ContractJobsOnly:
    """Worker mixin: refuse, in the worker itself (before a fork), any job `refusal` names."""

    allowed_jobs: frozenset[str] = CONTRACT_JOBS

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = refusal(job, self.allowed_jobs)
        if not reason:
            super().execute_job(job, queue)  # type: ignore[misc]
            return
        log.error("refused job %s from queue %s: %s; failed without running it",
                  job.id, queue.name, reason)
        worker: Any = self
        execution = worker.prepare_execution(job)
        # Off the intermediate list and into the started registry, as a run would.
        worker.prepare_job_execution(job)
        job.retries_left = 0
        job.webhooks = []
        worker.handle_job_failure(job, queue, exc_string=f"refused: {reason}\n",
                                  execution=execution)
        worker.set_state(WorkerStatus.IDLE)
