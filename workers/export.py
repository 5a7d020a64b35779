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
from bridge.store.connection import RIDE_OUT, async_redis
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox
from config.settings import Settings, SettingsError
from workers.export_http import ExportHttp, export_client
from workers.export_sender import EndpointSender

log = logging.getLogger("workers.export")

TRIM_INTERVAL_S = 60.0


@dataclass
class ExportService:
    """The senders of every enabled endpoint, kept in step with the endpoint list."""

    endpoints: EndpointStore
    client: ExportHttp
    lease_ttl_ms: int = 15_000
    max_block_ms: int = 1000
    token: str = field(default_factory=new_token)
    senders: dict[str, tuple[Endpoint, asyncio.Task[None]]] = field(default_factory=dict)
    _version: int = -1

    async def sync(self) -> None:
        """Start a sender for each enabled endpoint, stop the others (a changed endpoint's
        sender restarts with its new settings)."""
        version = await self.endpoints.version()
        if version == self._version:
            return
        wanted = {e.id: e for e in await self.endpoints.all() if e.enabled}
        for endpoint_id, (endpoint, task) in list(self.senders.items()):
            if wanted.get(endpoint_id) != endpoint or task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                del self.senders[endpoint_id]
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.senders:
                self.senders[endpoint_id] = (endpoint, asyncio.create_task(
                    self._deliver(endpoint), name=f"export-{endpoint_id}"))
        self._version = version

    async def _deliver(self, endpoint: Endpoint) -> None:
        sender = EndpointSender(endpoint, Outbox(self.endpoints.redis, endpoint.id),
                                self.endpoints, self.client)
        next_trim = 0.0
        while not sender.gone:
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

    async def stop_all(self) -> None:
        for _, task in self.senders.values():
            task.cancel()
        for _, task in self.senders.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.senders.clear()
        self._version = -1

    async def run(self, stop: asyncio.Event) -> None:
        holding = False
        while not stop.is_set():
            try:
                if await self.endpoints.acquire_lease(self.token, ttl_ms=self.lease_ttl_ms):
                    if not holding:
                        log.info("export lease taken")
                    holding = True
                    await self.sync()
                elif holding:
                    log.warning("export lease lost; stopping the senders")
                    holding = False
                    await self.stop_all()
            except redis.RedisError:
                log.warning("export: Redis unavailable; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        await self.stop_all()
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
    if settings.export_allow_private and not settings.development:
        log.warning("BRIDGE_EXPORT_ALLOW_PRIVATE=1: webhooks may reach private addresses")
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main(prog_name="python -m workers.export")
