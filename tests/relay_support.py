"""Running the change log relay inside a test: hand every change recorded so far on."""

from __future__ import annotations

from collections.abc import Sequence

import redis
import redis.asyncio

from bridge.jobs import JobQueues
from bridge.store.changelog import ChangeLog
from workers.relay import ChangeConsumer, JobsConsumer, Relay


async def relay_all(aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
                    consumers: Sequence[ChangeConsumer] | None = None) -> int:
    """Hand on every change in the log (as the relay process would) to each consumer (the
    RQ jobs consumer by default), without waiting for new ones; returns how many changes
    were handed on, summed over the consumers."""
    total = 0
    for consumer in consumers if consumers is not None else [JobsConsumer(JobQueues(sync_redis))]:
        relay = Relay(ChangeLog(aredis), consumer)
        try:
            while handed := await relay.step(wait=False):
                total += handed
        finally:
            await relay.release()
    return total
