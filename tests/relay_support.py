"""Running the change log relay inside a test: hand every change recorded so far on; consumers
that record the batches they get."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
import redis.asyncio

from bridge.core.changes import Change
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


@dataclass
class BatchRecorder:
    name: str
    batches: list[list[str]] = field(default_factory=list)

    async def handle(self, changes: list[Change]) -> None:
        self.batches.append([c.ticket_id for c in changes])  # log ids repeat across partitions


@dataclass
class FailsOnce(BatchRecorder):
    failed: bool = False

    async def handle(self, changes: list[Change]) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("receiver down")
        await super().handle(changes)
