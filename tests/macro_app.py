"""A small web app for the macro and report tests: the real handlers, keys and middlewares,
without the full app factory (swap in bridge.app.create_app when convenient)."""

from __future__ import annotations

from collections.abc import Iterable

import redis
import redis.asyncio
from aiohttp import web

from bridge.core.rules import AutomationConfig
from bridge.jobs import JobQueues
from bridge.store.tickets import TicketStore
from bridge.web import macro_apply, macros, reports
from bridge.web.keys import queues_key, redis_key, settings_key, store_key, sync_redis_key
from bridge.web.middlewares import edge_middleware
from bridge.web.rendering import render_gate_ctx
from config.settings import Settings
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, CONTACT_KEY

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
    app[store_key] = TicketStore(aredis, contact_key=CONTACT_KEY.encode())
    app[queues_key] = JobQueues(sync)
    if config is not None:
        app[macros.automations_key] = config
    app.cleanup_ctx.append(render_gate_ctx)
    app.add_routes(macros.routes)
    app.add_routes(macro_apply.routes)
    app.add_routes(reports.routes)
    app.add_routes(list(extra_routes))
    return app
