"""Running the change log relay inside a test: hand every change recorded so far on."""

from __future__ import annotations

import redis
import redis.asyncio

from bridge.jobs import JobQueues
from bridge.store.changelog import ChangeLog
from workers.relay import Relay


async def relay_all(aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> int:
    """Hand on every change in the log (as the relay process would), without waiting for
    new ones; returns how many changes were handed on."""
    relay = Relay(ChangeLog(aredis), JobQueues(sync_redis))
    total = 0
    try:
        while handed := await relay.step(wait=False):
            total += handed
    finally:
        await relay.log.release_lease(relay.token)
    return total
