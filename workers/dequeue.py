"""Dequeue from several queues without ever losing a job.

RQ pops from several queues with BLPOP (or LPOP): the job id leaves the queue list in Redis
before the worker has recorded anything. When the reply is lost (a dropped connection, a
Redis restart or failover, the worker killed right then) the job is in no list and no
registry: its status still says `queued` and nothing will ever run it
(tests/faults/test_connection_chaos.py lost an agent's reply that way). With a single queue
RQ uses BLMOVE into the queue's intermediate list instead, and its maintenance fails a job
that sat there for over a minute without starting, so the job's Retry runs it again.

`ReliableQueue.dequeue_any` does the same for several queues, in their priority order: a
non-blocking LMOVE from each queue in turn, and when all are empty a BLMOVE on the first
queue (agent replies start at once) for at most POLL_S, until the worker's dequeue timeout.
A job on a lower-priority queue therefore waits at most POLL_S when the worker is idle.
`ReliableDequeue.prepare_job_execution` takes the started job off the intermediate list, as
RQ does for a single queue. Redis before 6.2 has no (B)LMOVE: RQ's own dequeue is used.

That recovery needs the maintenance passes to keep running. RQ takes a queue's cleaning
lock for 899 s and releases it only when its pass completes: a pass cut short (a dropped
connection, a Redis restart) kept every worker from cleaning that queue for 15 minutes, so
a stranded job waited that long (the likely cause of a CI run of
tests/faults/test_connection_chaos.py timing out on one reply). `ReliableDequeue` holds the
lock for less than one maintenance interval instead, as RQ itself does for its group
registries: a pass cut short delays the next one by one interval at most.

A deploy's SIGTERM no longer strands a job either: while the worker is taking one (from
before the LMOVE until it is marked busy) RQ's warm stop is recorded, not raised, and the
worker stops after that job (`_Taking`). A SIGKILL there still leaves it to maintenance.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout, StopRequested
from rq.job import Job
from rq.utils import as_text, get_version

# When idle, how long a job on a queue other than the first may wait for a worker.
POLL_S = 1


class _Taking:
    """This process's worker is taking a job off its queues: from before the LMOVE that may
    move one into an intermediate list until the worker has marked itself busy. A stop
    requested meanwhile (SIGTERM) is recorded instead of raised: raised, it interrupted
    the LMOVE's reply or what followed it, and a job Redis had already moved stayed in the
    intermediate list until maintenance failed it a minute or two later. Recorded, the
    worker runs the job it took and stops at the top of its loop, as after any job, or
    stops at once if it took none."""

    active = False
    stop_requested = False


TAKING = _Taking()


class ReliableQueue(Queue):
    # How long a maintenance pass holds this queue's cleaning lock (RQ's 899 s by default;
    # ReliableDequeue sets it from its maintenance interval).
    maintenance_lock_s = 899

    def acquire_maintenance_lock(self) -> bool:
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True,
                                        ex=self.maintenance_lock_s))

    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        ordered = list(queues)
        if len(ordered) == 1 or get_version(connection) < (6, 2, 0):
            return super().dequeue_any(ordered, timeout, connection, job_class=job_class,
                                       serializer=serializer,
                                       death_penalty_class=death_penalty_class)
        queue_keys = [queue.key for queue in ordered]
        deadline = None if timeout is None else time.monotonic() + timeout
        TAKING.active = True
        try:
            taken = cls._take(queue_keys, timeout, deadline, connection, job_class=job_class,
                              serializer=serializer, death_penalty_class=death_penalty_class)
        except BaseException:
            TAKING.active = False
            raise
        # A job taken: still taking, until ReliableDequeue.prepare_execution.
        TAKING.active = taken is not None
        return taken

    @classmethod
    def _take(cls, queue_keys: list[str], timeout: int | None, deadline: float | None,
              connection: Redis, **job_options: Any) -> tuple[Job, Queue] | None:
        while True:
            if TAKING.stop_requested:  # and no job taken: stop now
                TAKING.stop_requested = False
                raise StopRequested()
            result = None
            for key in queue_keys:
                result = cls.lmove(connection, key, None)
                if result is not None:
                    break
            if result is None:
                if deadline is None:
                    return None
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise DequeueTimeout(timeout, queue_keys)
                try:
                    result = cls.lmove(connection, queue_keys[0],
                                       max(1, min(POLL_S, int(left_s))))
                except DequeueTimeout:
                    continue
            queue_key, job_id = map(as_text, result)
            fetched = cls._fetch_dequeued_job(connection, queue_key, job_id, **job_options)
            if fetched is not None:
                return fetched
            # The job hash is gone: RQ's maintenance drops its id from the intermediate list.


class ReliableDequeue:
    """Worker mixin: dequeue through ReliableQueue; clean each queue under a lock that
    expires before the next maintenance pass."""

    queue_class = ReliableQueue
    queues: list[Queue]
    maintenance_interval: int
    _stop_requested: bool

    def clean_registries(self) -> None:
        lock_s = max(int(self.maintenance_interval) - 1, 1)
        for queue in self.queues:
            if isinstance(queue, ReliableQueue):
                queue.maintenance_lock_s = lock_s
        super().clean_registries()  # type: ignore[misc]

    def _install_signal_handlers(self) -> None:
        TAKING.active = TAKING.stop_requested = False
        super()._install_signal_handlers()  # type: ignore[misc]

    def _shutdown(self) -> None:
        """RQ's warm stop when idle raises StopRequested; while a job is being taken, the
        stop waits for it (_Taking)."""
        if TAKING.active:
            TAKING.stop_requested = True
            self._stop_requested = True
            return
        super()._shutdown()  # type: ignore[misc]

    def prepare_execution(self, job: Job) -> Any:
        try:
            return super().prepare_execution(job)  # type: ignore[misc]
        finally:  # marked busy: a stop now waits for the job, RQ's own way (a stop
            # requested while taking it is in _stop_requested: RQ's loop stops after it)
            TAKING.active = TAKING.stop_requested = False

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False
                              ) -> None:
        # Every job came through an intermediate list (RQ only says so for one queue).
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)  # type: ignore[misc]
