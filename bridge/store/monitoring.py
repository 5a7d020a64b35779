"""Readings for /metrics taken from Redis at scrape time: RQ's queues by state and its
registered workers (the key names come from bridge.jobs, RQ's edge)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


class QueueKeyNames(Protocol):
    @property
    def queue(self) -> str: ...
    @property
    def queued(self) -> str: ...
    @property
    def dequeuing(self) -> str: ...
    @property
    def started(self) -> str: ...
    @property
    def scheduled(self) -> str: ...
    @property
    def failed(self) -> str: ...


# The states read for each queue, in this order.
QUEUE_STATES = ("queued", "dequeuing", "started", "scheduled", "failed")


@dataclass(frozen=True)
class QueueReading:
    queue: str
    by_state: dict[str, int]
    overdue: int  # scheduled jobs due before the given moment


async def read_queues(redis: Redis, names: Sequence[QueueKeyNames], *, overdue_before_s: float,
                      workers_key: str) -> tuple[list[QueueReading], int]:
    """Each queue's jobs by state and overdue count, and the registered workers: one
    pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for k in names:
            pipe.llen(k.queued)
            pipe.llen(k.dequeuing)
            pipe.zcard(k.started)
            pipe.zcard(k.scheduled)
            pipe.zcard(k.failed)
            pipe.zcount(k.scheduled, "-inf", overdue_before_s)
        pipe.scard(workers_key)
        *per_queue, workers = await pipe.execute()
    width = len(QUEUE_STATES) + 1
    readings = []
    for i, k in enumerate(names):
        *counts, overdue = per_queue[i * width:(i + 1) * width]
        readings.append(QueueReading(k.queue, dict(zip(QUEUE_STATES, map(int, counts),
                                                       strict=True)), int(overdue)))
    return readings, int(workers)
