"""Composition root of the web process: create_app(settings) -> web.Application."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio
from aiohttp import web

from bridge.jobs import JobQueues
from bridge.store.changelog import ChangeLog
from bridge.store.connection import async_redis, sync_redis
from bridge.store.tickets import TicketStore
from bridge.web import (
    api,
    export_api,
    export_bulk_api,
    health,
    macro_apply,
    macros,
    openapi,
    reports,
    teams,
    views,
    webhooks,
    workspace,
)
from bridge.web.heap import heap_freezing_ctx
from bridge.web.keys import (
    live_feed_key,
    queues_key,
    redis_key,
    settings_key,
    store_key,
    sync_redis_key,
)
from bridge.web.live import LiveFeed
from bridge.web.loop_lag import loop_lag_ctx
from bridge.web.middlewares import edge_middleware
from bridge.web.rendering import render_gate_ctx
from bridge.web.widget_setup import setup_widget
from config.settings import Settings


def create_app(settings: Settings, *, redis_client: redis.asyncio.Redis | None = None,
               freeze_heap: bool = False) -> web.Application:
    """`freeze_heap`: the web process's own app (`bridge serve`) keeps its long-lived heap
    out of the garbage collector's reach (bridge/web/heap.py); an app built inside a test
    leaves the test process's collector alone."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[edge_middleware],
    )
    app[settings_key] = settings

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = redis_client or async_redis(settings)
        sync_client = sync_redis(settings)
        app[redis_key] = client
        app[sync_redis_key] = sync_client
        app[store_key] = TicketStore(client, contact_key=settings.contact_key_bytes,
                                     dedupe_ttl_s=settings.dedupe_ttl_s)
        app[queues_key] = JobQueues(sync_client)
        app[live_feed_key] = LiveFeed(ChangeLog(client))
        yield
        await app[live_feed_key].close()
        if redis_client is None:
            await client.aclose()
        sync_client.close()

    app.cleanup_ctx.append(redis_ctx)
    # Rendering's own executor: webhooks never wait behind a slow template.
    app.cleanup_ctx.append(render_gate_ctx)
    app.cleanup_ctx.append(loop_lag_ctx)
    app.add_routes(health.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(api.routes)
    app.add_routes(openapi.routes)
    app.add_routes(macros.routes)
    app.add_routes(macro_apply.routes)
    app.add_routes(reports.routes)
    workspace.setup(app)
    app.add_routes(export_api.routes)
    app.add_routes(export_bulk_api.routes)
    app.add_routes(teams.routes)
    app.add_routes(views.routes)
    setup_widget(app)
    if freeze_heap:
        # Last, so that what the other contexts start (pools, feeds) is frozen with the rest.
        app.cleanup_ctx.append(heap_freezing_ctx())
    return app
