"""Typed application keys: the process-wide resources handlers read from request.app."""

from __future__ import annotations

import redis
import redis.asyncio
from aiohttp import web

from bridge.jobs import JobQueues
from bridge.store.tickets import TicketStore
from bridge.web.live import LiveFeed
from config.settings import Settings

settings_key = web.AppKey("settings", Settings)
redis_key = web.AppKey("redis", redis.asyncio.Redis)
sync_redis_key = web.AppKey("sync_redis", redis.Redis)
store_key = web.AppKey("store", TicketStore)
queues_key = web.AppKey("queues", JobQueues)
live_feed_key = web.AppKey("live_feed", LiveFeed)
