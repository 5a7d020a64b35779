"""A local webhook receiver that verifies every delivery with the `standardwebhooks` package,
and helpers to run the export's consumer and sender inside a test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox
from bridge.store.tickets import TicketStore
from tests.relay_support import relay_all
from workers.export_consumer import ExportConsumer
from workers.export_http import export_client
from workers.export_sender import EndpointSender


@dataclass
class Delivery:
    webhook_id: str
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """Answers `status()` (200 by default) to every delivery whose signature verifies with
    one of `secrets`; a delivery that does not verify is counted in `unverified` (and
    answered 400)."""

    secrets: list[str] = field(default_factory=list)
    status: Callable[[Delivery], int] = lambda _: 200
    received: list[Delivery] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        for secret in self.secrets:
            try:
                parsed = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            delivery = Delivery(headers["webhook-id"], parsed, headers)
            answer = self.status(delivery)
            if 200 <= answer < 300:
                self.received.append(delivery)
            return web.Response(status=answer)
        self.unverified.append(headers.get("webhook-id", "?"))
        return web.Response(status=400, text="signature did not verify")

    def ids(self) -> list[str]:
        return [d.webhook_id for d in self.received]

    def by_ticket(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for d in self.received:
            out.setdefault(d.payload["data"]["ticket"]["id"], []).append(d.webhook_id)
        return out


@asynccontextmanager
async def receiving(receiver: Receiver, path: str = "/hook") -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post(path, receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def export_changes(aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
                         store: TicketStore) -> int:
    """Hand every change so far to the export consumer (as the relay process does)."""
    consumer = ExportConsumer(store, EndpointStore(aredis))
    return await relay_all(aredis, sync_redis, [consumer])


def local_sender(aredis: redis.asyncio.Redis, endpoint: Any, *,
                 clock: Callable[[], float] | None = None) -> EndpointSender:
    """A sender for one endpoint that may reach the local receiver."""
    client = export_client(allow_http=True, allow_private=True, timeout_s=5)
    sender = EndpointSender(endpoint, Outbox(aredis, endpoint.id), EndpointStore(aredis),
                            client, jitter=lambda: 0.5)
    if clock is not None:
        sender.clock = clock
    return sender


def payload_types(receiver: Receiver) -> list[str]:
    return [d.payload["type"] for d in receiver.received]


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
