"""`python -m workers.export`: delivers the webhook export's outboxes (the Procfile's `export`
process; `bridge run` starts one).

Why a process of its own and not RQ jobs: order per ticket needs one writer per endpoint
and retries that hold a ticket's later deliveries back, which parallel RQ workers cannot
give; a job per delivery (a fork, or at best a queue round trip, each) would also not
reach hundreds of deliveries a second, while one event loop with keep-alive connections
does. Each endpoint has its own task, so a slow or failing endpoint never delays another.

One sender works at a time, under a lease in Redis; more can run as standbys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass, field

import click
import redis

from bridge.core.export_policy import Endpoint
from bridge.store.claims import LEASE_RELEASE_AT_EXIT_S, new_token
from bridge.store.connection import CLUSTER_UNSUPPORTED, RIDE_OUT, async_redis, cluster_node_at
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox
from config.settings import Settings, SettingsError
from workers.export_http import ExportHttp, export_client
from workers.export_sender import EndpointSender

log = logging.getLogger("workers.export")

TRIM_INTERVAL_S = 60.0


# How long a stopping sender (its endpoint changed, removed or disabled, or the lease lost)
# may take before it is logged as stuck; it is cancelled again every pass meanwhile.
STOP_WARN_S = 5.0
# How long a stop of the whole process waits for its senders before it gives up on them.
STOP_ALL_WAIT_S = 10.0


def _cancel_requested() -> bool:
    """True when the running task was cancelled, even if an await inside swallowed the
    CancelledError: Python 3.11's asyncio.wait_for returns the inner result instead of
    raising when the cancel arrives as that result does (CPython gh-86296, fixed in 3.12),
    and redis-py writes every command under wait_for. The request stays counted."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class ExportService:
    """The senders of every enabled endpoint, kept in step with the endpoint list.

    The lease loop never waits on a sender: a sender to stop is cancelled and set aside
    (`stopping`), cancelled again on each pass until it has ended, and its endpoint gets
    its new sender only then (one writer per endpoint). Each sender also checks, between
    steps, that it is still its endpoint's sender and that the lease it was started
    under has not run out, so none goes on delivering without the lease."""

    endpoints: EndpointStore
    client: ExportHttp
    lease_ttl_ms: int = 15_000
    max_block_ms: int = 1000
    token: str = field(default_factory=new_token)
    senders: dict[str, tuple[Endpoint, asyncio.Task[None]]] = field(default_factory=dict)
    stopping: dict[str, tuple[asyncio.Task[None], float]] = field(default_factory=dict)
    _version: int = -1
    # time.monotonic() until which the lease is ours (from before the renewal was sent).
    _lease_until: float = 0.0

    def lease_held(self) -> bool:
        return time.monotonic() < self._lease_until

    def _stop_sender(self, endpoint_id: str) -> None:
        _, task = self.senders.pop(endpoint_id)
        task.cancel()
        self.stopping[endpoint_id] = (task, time.monotonic())

    def _reap(self) -> None:
        """Forget the stopped senders; cancel again the ones still running."""
        for endpoint_id, (task, since) in list(self.stopping.items()):
            if task.done():
                del self.stopping[endpoint_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("export %s: sender ended with an error", endpoint_id,
                              exc_info=task.exception())
                continue
            task.cancel()
            waited = time.monotonic() - since
            if waited >= STOP_WARN_S:
                log.warning("export %s: sender still stopping after %.0f s", endpoint_id,
                            waited)
                self.stopping[endpoint_id] = (task, time.monotonic())  # warn every 5 s

    async def sync(self) -> None:
        """Start a sender for each enabled endpoint, stop the others (a changed endpoint's
        sender restarts with its new settings, once the old one has ended). Never waits
        for a sender."""
        self._reap()
        version = await self.endpoints.version()
        # A sender also ends by itself: its lease ran out while a renewal took longer than
        # the lease (Redis restarting, ridden out). The endpoint list is then unchanged but
        # the sender must start again once the lease is back.
        ended = any(task.done() for _, task in self.senders.values())
        if version == self._version and not self.stopping and not ended:
            return
        wanted = {e.id: e for e in await self.endpoints.all() if e.enabled}
        for endpoint_id, (endpoint, task) in list(self.senders.items()):
            if wanted.get(endpoint_id) != endpoint or task.done():
                log.info("export %s: stopping its sender (%s)", endpoint_id,
                         "ended" if task.done() else
                         "changed" if endpoint_id in wanted else "removed or disabled")
                self._stop_sender(endpoint_id)
        self._reap()
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.senders and endpoint_id not in self.stopping:
                self.senders[endpoint_id] = (endpoint, asyncio.create_task(
                    self._deliver(endpoint), name=f"export-{endpoint_id}"))
        # While a sender is stopping, the next pass looks again (its endpoint waits).
        self._version = version if not self.stopping else -1

    def _goes_on(self, endpoint_id: str, sender: EndpointSender) -> bool:
        entry = self.senders.get(endpoint_id)
        return (not sender.gone and not _cancel_requested() and self.lease_held()
                and entry is not None and entry[1] is asyncio.current_task())

    async def _deliver(self, endpoint: Endpoint) -> None:
        sender = EndpointSender(endpoint, Outbox(self.endpoints.redis, endpoint.id),
                                self.endpoints, self.client)
        next_trim = 0.0
        while self._goes_on(endpoint.id, sender):
            try:
                await sender.step(max_block_ms=self.max_block_ms)
                if time.monotonic() >= next_trim:
                    next_trim = time.monotonic() + TRIM_INTERVAL_S
                    await sender.outbox.trim(now_ms=sender.now_ms())
            except redis.RedisError:
                log.warning("export %s: Redis unavailable; retrying", endpoint.id,
                            exc_info=True)
                sender.reset()
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not stop the endpoint for good
                log.exception("export %s: step failed; retrying", endpoint.id)
                sender.reset()
                await asyncio.sleep(1.0)
        if _cancel_requested():
            raise asyncio.CancelledError

    async def stop_all(self, *, wait_s: float = STOP_ALL_WAIT_S) -> None:
        """Stop every sender; wait up to wait_s for them (cancelling again meanwhile)."""
        for endpoint_id in list(self.senders):
            self._stop_sender(endpoint_id)
        self._version = -1
        deadline = time.monotonic() + wait_s
        while self.stopping and time.monotonic() < deadline:
            tasks = [task for task, _ in self.stopping.values()]
            await asyncio.wait(tasks, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            self._reap()
        if self.stopping:
            log.error("export: senders of %s did not stop within %.0f s",
                      ", ".join(sorted(self.stopping)), wait_s)

    async def run(self, stop: asyncio.Event) -> None:
        holding = False
        while not stop.is_set():
            try:
                asked = time.monotonic()
                if await self.endpoints.acquire_lease(self.token, ttl_ms=self.lease_ttl_ms):
                    self._lease_until = asked + self.lease_ttl_ms / 1000
                    if not holding:
                        log.info("export lease taken")
                    holding = True
                    await self.sync()
                elif holding:
                    log.warning("export lease lost; stopping the senders")
                    holding = False
                    self._lease_until = 0.0
                    await self.stop_all(wait_s=0.0)
                else:
                    self._reap()
            except redis.RedisError:
                log.warning("export: Redis unavailable; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        await self.stop_all()
        self._lease_until = 0.0
        if holding:
            with contextlib.suppress(redis.RedisError, TimeoutError):
                await asyncio.wait_for(self.endpoints.release_lease(self.token),
                                       LEASE_RELEASE_AT_EXIT_S)
        log.info("export stopped")


async def _serve(settings: Settings) -> None:
    aredis = async_redis(settings, retry=RIDE_OUT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    client = export_client(allow_http=settings.development,
                           allow_private=settings.export_allow_private,
                           timeout_s=settings.export_timeout_s)
    service = ExportService(EndpointStore(aredis), client,
                            lease_ttl_ms=settings.relay_lease_ttl_s * 1000)
    try:
        await service.run(stop)
    finally:
        await client.aclose()
        await aredis.aclose()


@click.command()
@click.option("--log-level", default="INFO", show_default=True)
def main(log_level: str) -> None:
    """Deliver the webhook export (signed, retried, in order per ticket)."""
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    if not settings.redis_url:
        raise click.ClickException("REDIS_URL is not set: the export reads the web's Redis")
    if cluster_node_at(settings):
        raise click.ClickException(CLUSTER_UNSUPPORTED)
    if settings.export_allow_private and not settings.development:
        log.warning("BRIDGE_EXPORT_ALLOW_PRIVATE=1: webhooks may reach private addresses")
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main(prog_name="python -m workers.export")
