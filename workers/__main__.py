"""`python -m workers`: the Procfile's worker process.

One RQ worker on the bridge's queues in priority order (agent replies before surveys and
housekeeping), with RQ's scheduler (retries with backoff and timers need it), JSON payloads,
and the settings read once. Scale out by running more of these processes.

SIGTERM (a deploy, `bridge run` stopping, a platform restart) is a warm shutdown: the worker
takes no new job and exits once the current one is done. HerokuWorker also protects the job
from the SIGTERM that platforms send to every process of the container, then interrupts it
after `imminent_shutdown_delay` seconds if it is still running.

Volume: `--processes K` runs K workers under one supervisor (workers.pool): a message waits
for Twilio (~150 ms) in its worker, so K workers keep K messages in flight; at 150 ms per
call one worker sends at most ~6 messages/s, and WhatsApp's 80 messages/s per sender take
16. With more than one process the workers run jobs in-process by default (`--no-fork`: no
fork per job; the event loop, Redis pools and the HTTP keep-alive connection to Twilio stay
warm), `--fork` keeps a forked child per job. The supervisor warms everything up once and
forks the K workers, which share that memory copy-on-write (docs/performance.md: memory per
process). SIGTERM to the supervisor is the same warm shutdown for every worker; a worker
that dies is started again. `--processes 1` (the default) is the single worker above;
`bridge run` starts it with `--no-fork`, as jobs run in the Procfile's worker
(`worker: python -m workers --processes 16`).
"""

from __future__ import annotations

import inspect
import logging
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

import click
import redis
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now
from rq.worker import HerokuWorker, SimpleWorker

from bridge.jobs import QUEUES_BY_PRIORITY, JobQueues
from bridge.store.connection import CLUSTER_UNSUPPORTED, RIDE_OUT, cluster_node_at, sync_redis
from config.settings import Settings, SettingsError
from workers import runtime
from workers import tasks as _jobs  # noqa: F401  (loaded once, before any fork)
from workers.contract import CONTRACT_JOBS, ContractJobsOnly
from workers.dequeue import ReliableDequeue, ReliableQueue
from workers.pool import STOP_SIGNALS, Supervisor, held_stop_signals
from workers.scheduler import SafeSchedulerStart
from workers.sweeper import SWEEP_INTERVAL_S

log = logging.getLogger("workers")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# With --processes, which worker process wrote the line.
POOL_LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s %(message)s"


class _PipelinedHeartbeat:
    """RQ's heartbeat is three commands (HSET, EXPIRE, EXPIRE) sent one by one, and a worker
    beats ~3 times per job outside a pipeline: sent together they cost one round trip."""

    connection: redis.Redis

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)  # type: ignore[misc]
            pipe.execute()


class _StopSignalsAfterHandlers:
    """In a supervisor's child, a SIGTERM/SIGINT that arrived before RQ's handlers existed
    was held (workers.pool): RQ registers the worker before it installs them, and such a
    signal would otherwise kill the half-started worker (leaving its registration behind)
    instead of stopping it.

    The held request becomes what RQ's own handler records for a warm stop, without calling
    that handler: here we are not yet inside work()'s try/finally, and the StopRequested it
    raises when idle would skip the teardown (deregistration, scheduler stop)."""

    _stop_requested: bool
    _shutdown_requested_date: Any

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[misc]
        if held_stop_signals():
            log.info("stop requested while starting: stopping before the first job")
            self._shutdown_requested_date = rq_now()
            self._stop_requested = True
            # As after RQ's first signal: another one within a second is ignored, a later
            # one is a cold shutdown.
            for sig in STOP_SIGNALS:
                signal.signal(sig, self.request_force_stop)  # type: ignore[attr-defined]


class BoundedUnsubscribe:
    """RQ's teardown unsubscribes from the worker's command channel, stops the thread that
    listens on it (reads of up to 60 s: the unsubscribe reply is what ends them) and waits
    1 s for it. redis-py 8's `stop()` itself waits for the thread, without a bound; and a
    thread that took the unsubscribe reply before `stop()` cleared its flag goes back to
    waiting up to 60 s for a subscription. A warm stop then took a minute, past the
    supervisor's 25 s grace and a platform's 30 s before SIGKILL: the worker was killed
    (exit 1; seen once in a full test run, tests/test_bench_smoke.py's warm shutdown).
    Here the wait is RQ's 1 s again; the thread is a daemon and ends with the process."""

    pubsub: Any
    pubsub_thread: Any
    name: str
    pubsub_channel_name: str

    def unsubscribe(self) -> None:
        thread = self.pubsub_thread
        if thread is None or "timeout" not in inspect.signature(thread.stop).parameters:
            super().unsubscribe()  # type: ignore[misc]  # redis-py < 8: stop() does not wait
            return
        log.info("worker %s: unsubscribing from channel %s", self.name,
                 self.pubsub_channel_name)
        self.pubsub.unsubscribe()
        thread.stop(timeout=1)
        self.pubsub.close()


class _EnsuresSweep:
    """At each maintenance pass (at start, then every maintenance interval), make sure the
    unsent-sends sweep is scheduled (workers/sweeper.py): every worker names the same job,
    so one runs, and the chain survives a sweep that could not schedule its successor."""

    connection: redis.Redis
    ensure_sweep = False  # run_worker turns it on (not for --burst runs)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
        if self.ensure_sweep:
            try:
                JobQueues(self.connection).schedule_sweep(SWEEP_INTERVAL_S)
            except redis.RedisError:
                log.warning("could not schedule the unsent-sends sweep; next maintenance "
                            "pass tries again", exc_info=True)


class _PromptReconnect:
    """RQ's worker sleeps 1, 2, 4 ... up to 60 s between dequeue attempts while Redis keeps
    failing, and only resets that wait once a job is dequeued. Under a flapping connection
    (a failover, a proxy dropping idle clients) the wait climbs to a minute and outbound
    messages sit unsent that long after Redis is back. Capped at 4 s, a worker retries soon
    after a recovery; one attempt per 4 s per process costs a down Redis nothing."""

    max_connection_wait_time = 4.0


class BridgeWorker(SafeSchedulerStart, _PromptReconnect, ContractJobsOnly, ReliableDequeue,
                   _EnsuresSweep, _StopSignalsAfterHandlers, _PipelinedHeartbeat,
                   BoundedUnsubscribe, HerokuWorker):
    # A send takes at most ~15 s (HTTP timeouts); platforms allow 30 s between SIGTERM
    # and SIGKILL. Give a running job 20 s before it is interrupted.
    imminent_shutdown_delay = 20


class InProcessWorker(SafeSchedulerStart, _PromptReconnect, ContractJobsOnly, ReliableDequeue,
                      _EnsuresSweep, _StopSignalsAfterHandlers, _PipelinedHeartbeat,
                      BoundedUnsubscribe, SimpleWorker):
    """Runs jobs in the worker process itself: no fork per job, so the event loop, the Redis
    pools and the HTTP keep-alive connection to Twilio are reused from one job to the next
    (a forked child pays ~50-100 ms of set-up and a new TLS handshake per message). For
    volume: N such processes give N sends in flight. SIGTERM still finishes the current
    job before exiting; there is no child to protect from a platform-wide SIGTERM."""


def redacted(url: str) -> str:
    """The Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def build_worker(connection: redis.Redis, *, fork: bool = True,
                 settings: Settings | None = None) -> BridgeWorker | InProcessWorker:
    """RQ's timing comes from the settings (BRIDGE_WORKER_*): how soon the jobs of a dead
    worker are failed or retried and a dead worker's scheduler is replaced."""
    settings = settings or Settings()
    queues = [ReliableQueue(name, connection=connection, serializer=JSONSerializer)
              for name in QUEUES_BY_PRIORITY]
    worker_class = BridgeWorker if fork else InProcessWorker
    worker = worker_class(queues, connection=connection, serializer=JSONSerializer,
                          worker_ttl=settings.worker_ttl_s,
                          maintenance_interval=settings.worker_maintenance_interval_s,
                          job_monitoring_interval=settings.worker_job_monitoring_interval_s)
    worker.allowed_jobs = CONTRACT_JOBS | frozenset(settings.worker_extra_jobs)
    return worker


def run_worker(connection: redis.Redis, settings: Settings, *, fork: bool, burst: bool,
               log_level: str) -> int:
    """The exit status: 0 when the worker stopped because it was asked to (a signal) or,
    with `burst`, ran out of jobs; 1 when RQ's loop gave up on its own (it quits on any
    error outside its dequeue, e.g. Redis unreachable for longer than the connection
    retries): the supervisor, `bridge run` or the platform must start it again, not take
    it for finished."""
    worker = build_worker(connection, fork=fork, settings=settings)
    worker.ensure_sweep = not burst
    worker.work(burst=burst, with_scheduler=True, logging_level=log_level,
                log_format=LOG_FORMAT)
    if burst or worker._shutdown_requested_date is not None:  # RQ sets it on a stop signal
        return 0
    log.error("worker %s stopped without being asked to (see the error above)", worker.name)
    return 1


def pool_child(settings: Settings, *, fork: bool, burst: bool, log_level: str) -> int:
    """One worker of `--processes K`, in a child of the supervisor: its own connection."""
    connection = sync_redis(settings, retry=RIDE_OUT)
    try:
        return run_worker(connection, settings, fork=fork, burst=burst, log_level=log_level)
    finally:
        connection.close()


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queues are empty (tests, batch runs).")
@click.option("--fork/--no-fork", default=None,
              help="Run each job in a forked child (isolation) or in the worker process "
                   "(speed). Default: --fork with one process, --no-fork with more.")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes under one supervisor: messages sent at the same time.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def main(burst: bool, fork: bool | None, processes: int, log_level: str) -> None:
    """Run the bridge's worker(s): outbound messages, ticket events and timers."""
    log_format = LOG_FORMAT if processes == 1 else POOL_LOG_FORMAT
    logging.basicConfig(level=log_level, format=log_format, stream=sys.stderr)
    # httpx logs every request at INFO; the send job logs one line per message already.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(log_level)))
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    if not settings.redis_url:
        raise click.ClickException(
            "REDIS_URL is not set: the worker needs the Redis the web process uses "
            "(`bridge run` starts an embedded Redis and passes its URL to the worker)"
        )
    if cluster_node_at(settings):
        raise click.ClickException(CLUSTER_UNSUPPORTED)
    # A wrong URL is reported at once; once started, the worker rides out Redis restarts.
    probe = sync_redis(settings)
    try:
        probe.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"cannot reach Redis at {redacted(settings.redis_url)}: {exc}") from None
    finally:
        probe.close()
    # Jobs run in forked children; they inherit these settings instead of re-reading them.
    runtime.configure(settings)
    runtime.preload(settings)
    in_process = not fork if fork is not None else processes > 1
    outbound = "Twilio at " + settings.twilio_api_url if settings.twilio_enabled \
        else "the local outbox"
    log.info("worker on %s (Redis %s); outbound messages go to %s",
             ", ".join(QUEUES_BY_PRIORITY), redacted(settings.redis_url), outbound)
    if processes == 1:
        connection = sync_redis(settings, retry=RIDE_OUT)
        try:
            code = run_worker(connection, settings, fork=not in_process, burst=burst,
                              log_level=log_level)
        finally:
            connection.close()
        log.info("worker stopped")
        if code:
            sys.exit(code)
        return
    # The children open their own connections; none is shared across the fork.
    log.info("%d worker processes (%s)", processes,
             "jobs in-process" if in_process else "a forked child per job")
    supervisor = Supervisor(
        processes,
        lambda: pool_child(settings, fork=not in_process, burst=burst, log_level=log_level),
        grace_s=BridgeWorker.imminent_shutdown_delay + 5,
    )
    code = supervisor.run()
    log.info("workers stopped")
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main(prog_name="python -m workers")
