"""A small web app for the macro and report tests: the real handlers, keys and middlewares,
without the full app factory (swap in bridge.app.create_app when convenient)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio
from aiohttp import web

from bridge.core.csat import rating_signal
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.rules import AutomationConfig
from bridge.jobs import JobQueues
from bridge.store.tickets import RouteResult, TicketStore
from bridge.web import macros, reports
from bridge.web.keys import queues_key, redis_key, settings_key, store_key, sync_redis_key
from bridge.web.middlewares import edge_middleware
from bridge.web.rendering import render_gate_ctx
from config.settings import Settings
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN

AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def build_app(
    settings: Settings,
    aredis: redis.asyncio.Redis,
    sync: redis.Redis,
    *,
    config: AutomationConfig | None = None,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    app = web.Application(middlewares=[edge_middleware])
    app[settings_key] = settings
    app[redis_key] = aredis
    app[sync_redis_key] = sync
    app[store_key] = TicketStore(aredis)
    app[queues_key] = JobQueues(sync)
    if config is not None:
        app[macros.automations_key] = config
    app.cleanup_ctx.append(render_gate_ctx)
    app.add_routes(macros.routes)
    app.add_routes(reports.routes)
    app.add_routes(list(extra_routes))
    return app


def now_ms() -> int:
    return int(time.time() * 1000)


_seq = iter(range(10**9))


async def inbound(
    store: TicketStore,
    body: str = "Bonjour",
    *,
    address: str = "whatsapp:+33612345678",
    name: str = "Camille Martin",
    at_ms: int | None = None,
    button_payload: str = "",
    policy: ChannelPolicy | None = None,
) -> RouteResult:
    """Route one customer message as the webhook would (the rating signal included)."""
    msg = InboundMessage(
        channel=Channel.WHATSAPP, provider_id=f"SM{next(_seq):032d}",
        contact_address=address, received_at_ms=at_ms or now_ms(), body=body,
        profile_name=name, button_payload=button_payload,
    )
    signal: RatingSignal = rating_signal(body=body, button_payload=button_payload,
                                         replied_to_id="")
    return await store.route_inbound(msg, signal, policy or ChannelPolicy(),
                                     now_ms=at_ms or now_ms())


def ids(result: Any) -> str:
    assert result.ticket_id
    return str(result.ticket_id)
