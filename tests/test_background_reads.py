"""Background readers ask Redis for little at a time: Redis runs one command (or one
transaction) at a time, and every webhook waits behind a big reply (README, "Relay")."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bridge.jobs import QUEUE_EVENTS, JobQueues
from bridge.store import keys
from bridge.store.changelog import RELAY_CONSUMER, ChangeLog
from bridge.store.tickets import TicketStore
from tests.factories import inbound
from workers.relay import JobsConsumer, Relay


async def test_lag_counts_at_most_the_cap_per_partition_reading_few_partitions_a_trip(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape must not have Redis build every waiting entry at once."""
    from bridge.store import changelog

    for n in range(changelog.LAG_COUNT_CAP + 20):  # one contact: one partition
        await inbound(store, f"message {n}", address="whatsapp:+33600000777")
    await inbound(store, address="whatsapp:+33600000778")
    log = ChangeLog(store.redis)
    pipelines: list[int] = []
    real_pipeline = log._entries.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a: object, **k: object) -> object:
            pipelines.append(len(pipe.command_stack))
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(log._entries, "pipeline", counted)
    lag = await log.lag(RELAY_CONSUMER)
    assert lag.events == changelog.LAG_COUNT_CAP + 1  # the second contact's partition: 1
    assert pipelines and max(pipelines) <= changelog.PARTITIONS_PER_ROUND_TRIP
    assert sum(pipelines) == keys.PARTITIONS


async def test_a_relay_reads_a_few_entries_per_partition_and_reads_on_while_more_wait(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    """XREAD's COUNT is per stream: a relay catching up on a backlog asks for a few entries
    of each partition a read (one reply of up to 128,000 entries stalled Redis), and knows
    when a partition had more waiting, so that it reads on at once rather than pausing."""
    for n in range(40):  # one contact: one partition
        await inbound(store, f"message {n}", address="whatsapp:+33600000555")
    log = ChangeLog(store.redis)
    reads: list[int] = []
    real_read = log.read

    async def counted(positions: dict[int, str], *, count: int, block_ms: int | None) -> Any:
        reads.append(count)
        return await real_read(positions, count=count, block_ms=block_ms)

    log.read = counted  # type: ignore[method-assign]
    relay = Relay(log, JobsConsumer(JobQueues(sync_redis)), per_partition=16)
    handed = []
    for _ in range(4):
        handed.append((await relay.step(wait=False), relay._more_waiting))
    assert handed == [(16, True), (16, True), (8, False), (0, False)]
    assert set(reads) == {16}
    assert (await log.lag(RELAY_CONSUMER)).events == 0


async def test_jobs_are_enqueued_a_small_transaction_at_a_time(sync_redis: redis.Redis) -> None:
    """Redis serves nobody else during a transaction: a relay batch of thousands of jobs
    goes in transactions of ENQUEUE_CHUNK."""
    from bridge import jobs
    from bridge.jobs import trigger_job

    queues = JobQueues(sync_redis)
    executed: list[int] = []
    real_pipeline = sync_redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            executed.append(len(pipe.command_stack))
            return real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    sync_redis.pipeline = counted
    count = jobs.ENQUEUE_CHUNK * 2 + 5
    queues.enqueue_many([trigger_job(str(n), "ticket.created", 1, f"{n}-0")
                         for n in range(count)])
    assert len(executed) == 3
    queue = Queue(QUEUE_EVENTS, connection=sync_redis, serializer=JSONSerializer)
    assert len(queue) == count


async def test_an_export_backlog_is_counted_a_few_entries_at_a_time(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint's health counts the deliveries after its watermark: exactly below the
    cap, the cap above it, never reading more than a chunk of bodies at once."""
    from bridge.store import export_outbox
    from bridge.store.export_outbox import NewDelivery, Outbox, append

    monkeypatch.setattr(export_outbox, "BACKLOG_READ_CHUNK", 7)
    monkeypatch.setattr(export_outbox, "BACKLOG_CAP", 30)
    outbox = Outbox(store.redis, "ep_reads")
    asked: list[int] = []
    real_xrange = store.redis.xrange

    async def xrange(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["count"])
        return await real_xrange(*args, **kwargs)

    monkeypatch.setattr(store.redis, "xrange", xrange)

    async def deliveries(first: int, count: int) -> None:
        await append(store.redis, [NewDelivery("ep_reads", f"msg_{n}", "t1", "ticket.updated",
                                               "{}", 1) for n in range(first, first + count)])

    assert (await outbox.health()).backlog == 0
    await deliveries(0, 14)  # two whole chunks: the third read finds none
    asked.clear()
    assert (await outbox.health()).backlog == 14
    assert asked == [7, 7, 7]
    await deliveries(14, 3)
    assert (await outbox.health()).backlog == 17
    # Past the cap: the cap, and the last read asks only for what reaches it.
    await deliveries(17, 20)
    asked.clear()
    assert (await outbox.health()).backlog == 30
    assert asked == [7, 7, 7, 7, 2]
    # After the watermark only.
    entries = await real_xrange(outbox.out, "-", "+", count=5)
    await outbox.save_position(entries[-1][0].decode())
    assert (await outbox.health()).backlog == 30  # 32 after it: still capped
    entries = await real_xrange(outbox.out, "-", "+", count=20)
    await outbox.save_position(entries[-1][0].decode())
    assert (await outbox.health()).backlog == 17
