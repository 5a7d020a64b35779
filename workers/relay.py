"""`python -m workers.relay`: hands each change log entry on to its consumers (the Procfile's
`relay` process; `bridge run` starts one).

The web process records a change and its change log entry in one atomic step and answers;
this process hands the entries on to each consumer (consumers_for): the trigger jobs of
bridge.core.changes and the send job again when Twilio refused a free-form message outside
the 24-hour window (63016), handed to RQ; and whatever else keeps up with ticket changes.

Delivery is at least once and in order per partition (so per ticket): a batch is read, its
jobs are enqueued in one round trip, and only then is the position saved. A relay that dies
in between hands the batch on again; the jobs are named after the change (same job id) and
the trigger rules claim a marker per change before acting, so a change has its effect once.

Each consumer has its own positions and lease, so a slow or failing consumer delays only
itself. One relay feeds a consumer at a time, under a lease in Redis renewed as it runs;
more can run as standbys (a second dyno) and take over within the lease's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import click
import redis
import redis.asyncio
from prometheus_client import Counter

from bridge.channels.twilio import OUTSIDE_WINDOW
from bridge.core.changes import Change, failed_with, status_after, triggers_of
from bridge.core.rule_model import AutomationConfig
from bridge.core.rule_parsing import load_config
from bridge.core.tickets import Status
from bridge.jobs import JobQueues, JobSpec, template_fallback_job, trigger_job
from bridge.store.changelog import READ_PER_PARTITION, RELAY_CONSUMER, ChangeLog
from bridge.store.claims import LEASE_RELEASE_AT_EXIT_S, new_token
from bridge.store.connection import (
    CLUSTER_UNSUPPORTED,
    RIDE_OUT,
    async_redis,
    cluster_node_at,
    sync_redis,
)
from bridge.store.teams import TeamStore
from config.settings import Settings, SettingsError
from workers.export_consumer import ExportConsumer
from workers.report_counters import ReportConsumer
from workers.shared_reads import SharedReads
from workers.teams import TeamsConsumer

log = logging.getLogger("workers.relay")

# Refused free-form messages that the approved template replaces (the send job knows how).
_TEMPLATE_FALLBACK_CODES = frozenset({OUTSIDE_WINDOW})

# Trimming reads every consumer's positions and touches every partition: not per batch.
TRIM_INTERVAL_S = 5.0

RELAYED = Counter("bridge_relay_changes", "Change log entries handed on by this relay",
                  ["consumer"])


def jobs_for(changes: list[Change], config: AutomationConfig | None = None) -> list[JobSpec]:
    """The jobs a batch of changes asks for, in log order, each job once. With the rule
    configuration, a trigger that nothing can act on (no rule listens, no automation can
    set a timer for the ticket's status) gets no job: a new conversation costs a worker
    nothing unless a rule asks for it."""
    specs: list[JobSpec] = []
    seen: set[str] = set()
    for change in changes:
        for ticket_id, trigger in triggers_of(change):
            if config is not None:
                after = status_after(change, trigger)
                if not config.may_act_on(trigger.value,
                                         Status(after) if after is not None else None):
                    continue
            # A routed message names its event (the marker the rules claimed before the
            # change log existed); other changes are identified by their entry.
            spec = trigger_job(ticket_id, trigger.value, change.version,
                               change.event_id or change.log_id)
            if spec.job_id not in seen:
                seen.add(spec.job_id)
                specs.append(spec)
        if failed_with(change, _TEMPLATE_FALLBACK_CODES):
            spec = template_fallback_job(change.ticket_id, change.event_id)
            if spec.job_id not in seen:
                seen.add(spec.job_id)
                specs.append(spec)
    return specs


class ChangeConsumer(Protocol):
    """What the relay feeds: `handle` gets each batch of changes at least once, in log order
    within each partition (so in order per ticket). It returns once the batch's effects are
    durable (jobs enqueued, records written); raising hands the same batch on again."""

    name: str

    async def handle(self, changes: list[Change]) -> None: ...


@dataclass
class JobsConsumer:
    """The trigger and template-fallback jobs, handed to RQ per batch (in transactions of
    bridge.jobs.ENQUEUE_CHUNK)."""

    queues: JobQueues
    config: AutomationConfig | None = None  # None: hand every trigger on
    name: str = RELAY_CONSUMER

    async def handle(self, changes: list[Change]) -> None:
        specs = jobs_for(changes, self.config)
        if specs:  # most batches under load are appends, which ask for no job
            await asyncio.to_thread(self.queues.enqueue_many, specs)


@dataclass
class Relay:
    """Feeds one consumer from its saved positions, under the consumer's lease."""

    log: ChangeLog
    consumer: ChangeConsumer
    shared: SharedReads | None = None  # None: this relay reads for itself
    # Entries read per partition at a time (bridge.store.changelog). Caught up, a read finds
    # a few (at 8,000 changes a second, read every 100 ms: about 3); catching up, it reads
    # on at once while a partition had more.
    per_partition: int = READ_PER_PARTITION
    block_ms: int = 1000
    # Under load every read finds a few new entries, and every read names all 256
    # partitions' streams (a command Redis parses and answers on the core it shares with
    # the load). Reading at most every min_read_interval_s while changes keep coming lets
    # them gather into batches (tests/test_change_consumers.py counts the reads); an idle
    # relay's blocking read still returns the moment a change is written, so a lone change
    # is not delayed. The consumers of one process also share their reads (SharedReads).
    # 100 ms: what a trigger, an export or an assignment can wait. Fed 850 appends a
    # second, the relay process used 28% of a core reading every 20 ms, 12% every 100 ms
    # (its /proc CPU time, alone with Redis).
    min_read_interval_s: float = 0.1
    lease_ttl_ms: int = 15_000
    # The lease is renewed once a third of its lifetime has passed, not on every batch (a
    # round trip per consumer and batch, most of a step's cost when batches are small). A
    # relay paused longer than that renews before its next batch, and learns then whether
    # another took the lease: the same check-then-act as renewing on every batch.
    lease_renew_fraction: float = 1 / 3
    clock: Callable[[], float] = time.monotonic
    token: str = field(default_factory=new_token)
    handed_on: int = 0
    steps: int = 0  # batches handed on
    _positions: dict[int, str] | None = None
    _next_trim: float = 0.0
    _renew_after: float = 0.0  # monotonic time from which the lease is renewed again
    _more_waiting: bool = False  # the last read stopped at per_partition somewhere

    @property
    def name(self) -> str:
        return self.consumer.name

    async def hold_lease(self) -> bool:
        asked = self.clock()  # the lease runs from before the call that set it
        if self._positions is not None:
            if asked < self._renew_after:
                return True
            if await self.log.renew_lease(self.token, ttl_ms=self.lease_ttl_ms,
                                          consumer=self.name):
                self._renewed(asked)
                return True
            log.warning("relay lease of %s lost; waiting to take it again", self.name)
            self._positions = None
        if not await self.log.acquire_lease(self.token, ttl_ms=self.lease_ttl_ms,
                                            consumer=self.name):
            return False
        self._renewed(asked)
        # Read the positions only once the lease is ours: the last holder saved them.
        self._positions = await self.log.positions(self.name)
        log.info("relay lease of %s taken", self.name)
        return True

    def _renewed(self, asked: float) -> None:
        self._renew_after = asked + self.lease_ttl_ms / 1000 * self.lease_renew_fraction

    async def step(self, *, wait: bool = True) -> int:
        """Hand one batch on; returns how many changes it held (0: none, or no lease).
        `wait`: wait up to block_ms for a change when there is none."""
        if not await self.hold_lease():
            return 0
        assert self._positions is not None
        read = self.shared.read if self.shared is not None else self.log.read
        batch = await read(self._positions, count=self.per_partition,
                           block_ms=self.block_ms if wait else None)
        self._more_waiting = batch.full
        if not batch.positions:
            return 0
        if batch.unreadable:
            log.error("%d change log entries could not be read and were skipped",
                      batch.unreadable)
        # A copy: a shared batch's list goes to other consumers too.
        await self.consumer.handle(list(batch.changes))
        self._positions.update(batch.positions)
        await self.log.save_positions(self.name, batch.positions)
        if time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + TRIM_INTERVAL_S
            await self.log.trim()
        RELAYED.labels(self.name).inc(len(batch.changes))
        self.handed_on += len(batch.changes)
        self.steps += 1
        return len(batch.changes)

    async def release(self) -> None:
        await self.log.release_lease(self.token, consumer=self.name)
        self._positions = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                started = time.monotonic()
                handed = await self.step()
                if not handed and self._positions is None:
                    # Without the lease, wait a little before asking again; with it, the
                    # read already waited block_ms for news.
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                elif handed and not self._more_waiting:
                    pause_s = self.min_read_interval_s - (time.monotonic() - started)
                    if pause_s > 0:
                        await asyncio.wait_for(stop.wait(), timeout=pause_s)
            except TimeoutError:
                continue
            except redis.RedisError:
                log.warning("relay: Redis unavailable; retrying", exc_info=True)
                await asyncio.sleep(1.0)
            except Exception:
                # A consumer's own failure: the batch is handed on again after a pause; the
                # other consumers go on.
                log.exception("relay: consumer %s failed; retrying its batch", self.name)
                await asyncio.sleep(1.0)
        if self._positions is not None:
            with contextlib.suppress(redis.RedisError, TimeoutError):
                await asyncio.wait_for(self.release(), LEASE_RELEASE_AT_EXIT_S)


def consumers_for(settings: Settings, aredis: redis.asyncio.Redis,
                  connection: redis.Redis) -> list[ChangeConsumer]:
    """Every consumer the relay process feeds; each name is in changelog.CONSUMERS."""
    # The rules as the workers load them; like the workers, the relay reads them at start.
    config = load_config(settings.config_dir / "automations.toml")
    return [
        JobsConsumer(JobQueues(connection), config=config),
        ExportConsumer.build(settings, aredis),
        ReportConsumer.on(aredis),
        TeamsConsumer.build(settings, aredis),
    ]


async def _serve(settings: Settings) -> None:
    aredis = async_redis(settings, retry=RIDE_OUT)
    connection = sync_redis(settings, retry=RIDE_OUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    change_log = ChangeLog(aredis)
    # Records from before read-only people were refused available (they got tickets).
    if retired := await TeamStore(aredis).retire_read_only():
        log.warning("read-only people taken out of assignment: %s", ", ".join(retired))
    shared = SharedReads(change_log)
    relays = [Relay(change_log, consumer, shared=shared,
                    lease_ttl_ms=settings.relay_lease_ttl_s * 1000)
              for consumer in consumers_for(settings, aredis, connection)]
    started = time.monotonic()
    try:
        await asyncio.gather(*(relay.run(stop) for relay in relays))
    finally:
        await aredis.aclose()
        connection.close()
        for relay in relays:
            log.info("relay stopped after handing %d changes on to %s in %.0f s",
                     relay.handed_on, relay.name, time.monotonic() - started)
        log.info("%d batches handed on; the consumers' reads of the change log (idle ones "
                 "included): %d went to Redis, %d joined one in flight",
                 sum(relay.steps for relay in relays), shared.reads, shared.joined)


@click.command()
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """Hand the change log on to the workers (triggers, template fallbacks)."""
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    if not settings.redis_url:
        raise click.ClickException("REDIS_URL is not set: the relay reads the web's Redis")
    if cluster_node_at(settings):
        raise click.ClickException(CLUSTER_UNSUPPORTED)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main(prog_name="python -m workers.relay")
