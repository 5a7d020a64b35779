"""RQ's scheduler process, started so that a stop signal cannot reach it half-born.

RQ forks its scheduler with the worker's signal handlers still installed (or, at the first
start, whatever the process had). A SIGTERM that lands in the child before the scheduler
installs its own handlers runs the worker's handler there: it raises StopRequested, and
if that happens in the first instructions after fork() (before multiprocessing's own
try/except) the exception unwinds the child into a copy of the parent's stack. The copy
then goes on as a second worker (deregistering the real one), and the worker's teardown
waits forever for a scheduler that will never stop. A worker stopped right after it
started (a deploy, a crash-restart loop, a test) hits that window every time the machine
is busy enough for the child to be scheduled late.

So the fork happens with the stop signals blocked: the child starts with them pending,
unblocks them once the scheduler's own handlers exist, and a stop that came early is a
normal stop (locks released, death registered). Stopping is bounded as well: a scheduler
that has not stopped `STOP_GRACE_S` after its SIGTERM is killed and its locks released by
the worker, instead of the worker hanging in its teardown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

import redis
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler

from bridge.store.connection import ReconnectingPool
from workers.pool import STOP_SIGNALS

log = logging.getLogger("workers.scheduler")

# The scheduler checks for a stop once per interval (1 s) after an enqueue pass; a pass over
# a large backlog of due jobs can take a few seconds more.
STOP_GRACE_S = 15.0


class BridgeScheduler(RQScheduler):
    @property
    def connection(self) -> redis.Redis:
        """RQ's own client, built in the scheduler process from the worker's settings,
        on a pool that rides out a dropped connection (connection.ReconnectingPool)."""
        if self._connection is None:
            pool = ReconnectingPool(connection_class=self._pool_class, **self._pool_kwargs)
            self._connection = self._connection_class.from_pool(pool)
        return self._connection

    def start(self) -> Any:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().start()  # type: ignore[no-untyped-call]
        finally:  # in the parent: the child never returns from start()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class SafeSchedulerStart:
    """Worker mixin: RQ's `_start_scheduler` and `stop_scheduler`, with BridgeScheduler and
    a bounded stop. The start is RQ's own logic (3.0) with only the class changed: RQ names
    RQScheduler inside the method and has no setting for it."""

    queues: Any
    connection: redis.Redis
    serializer: Any
    log: logging.Logger
    scheduler: RQScheduler | None

    def _start_scheduler(self, burst: bool = False, logging_level: str | None = "INFO",
                         date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
                         log_format: str = DEFAULT_LOGGING_FORMAT) -> None:
        self.scheduler = BridgeScheduler(
            self.queues, connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format, log_format=log_format, serializer=self.serializer)
        self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if not self.scheduler.acquired_locks:
            return
        if burst:
            try:
                self.scheduler.register_birth()
                self.scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
            finally:
                self.scheduler.release_locks()  # type: ignore[no-untyped-call]
                self.scheduler.register_death()
        else:
            self.scheduler.start()

    def stop_scheduler(self) -> None:
        scheduler = self.scheduler
        process = scheduler._process if scheduler is not None else None
        if scheduler is None or process is None or not process.pid:
            return
        with contextlib.suppress(OSError):  # already gone
            os.kill(process.pid, signal.SIGTERM)
        process.join(STOP_GRACE_S)
        if process.exitcode is None:
            log.error("scheduler %d did not stop %.0f s after SIGTERM: killing it",
                      process.pid, STOP_GRACE_S)
            process.kill()
            process.join()
        if process.exitcode != 0:
            # It died before releasing its locks: free them now rather than leave every
            # other worker without a scheduler until they expire (interval + 60 s).
            try:
                scheduler.release_locks()
                scheduler.register_death()
            except redis.RedisError:
                log.warning("could not release the scheduler's locks; they expire on their "
                            "own", exc_info=True)

