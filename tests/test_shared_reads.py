"""The relay process's consumers share their reads of the change log (workers/shared_reads.py):
an answer kept a moment serves those that ask after it, a read in flight serves those that
ask while it waits, and each consumer still gets every change once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bridge.store.changelog import Batch, ChangeLog
from bridge.store.tickets import TicketStore
from tests.factories import inbound
from tests.relay_support import BatchRecorder, FailsOnce
from workers.relay import Relay
from workers.shared_reads import SharedReads


async def test_consumers_at_the_same_positions_share_their_reads(
        store: TicketStore) -> None:
    """The relay process's consumers read the log once between them while they stand at the
    same positions; each still gets every change once, in order, and one whose batch failed
    gets it again."""
    written = 40
    recorders = [BatchRecorder(f"shared-test-{n}") for n in range(4)]
    failing = FailsOnce("shared-test-failing")
    log = ChangeLog(store.redis)
    shared = SharedReads(log, max_age_s=0.2)
    relays = [Relay(log, consumer, shared=shared, min_read_interval_s=0.2)
              for consumer in [*recorders, failing]]
    stop = asyncio.Event()
    running = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        for n in range(written):
            await inbound(store, address=f"whatsapp:+336123470{n:02d}")
        async with asyncio.timeout(30):
            while min(sum(map(len, r.batches)) for r in [*recorders, failing]) < written:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*running)
    first = [ticket for batch in recorders[0].batches for ticket in batch]
    assert len(first) == written and len(set(first)) == written
    for recorder in [*recorders[1:], failing]:
        assert sorted(t for batch in recorder.batches for t in batch) == sorted(first)
    assert failing.failed


async def test_consumers_in_step_read_once_between_them(store: TicketStore) -> None:
    log = ChangeLog(store.redis)
    shared = SharedReads(log, max_age_s=60)
    recorders = [BatchRecorder(f"in-step-{n}") for n in range(4)]
    relays = [Relay(log, r, shared=shared) for r in recorders]
    for round_ in range(2):
        for n in range(10):
            await inbound(store, address=f"whatsapp:+33612348{round_}{n:02d}")
        for relay in relays:
            assert await relay.step(wait=False) == 10
        assert shared.reads == round_ + 1  # one read per round, not four
    assert all(r.batches == recorders[0].batches for r in recorders)
    # A consumer ahead of a kept batch gets only what it has not handed on.
    await inbound(store, address="whatsapp:+33612348900")
    assert await relays[0].step(wait=False) == 1  # reads alone: the kept batch is behind it
    assert shared.reads == 3
    await inbound(store, address="whatsapp:+33612348901")
    newcomer = BatchRecorder("in-step-new")
    lagging = Relay(log, newcomer, shared=shared)
    assert await relays[1].step(wait=False) == 1  # the batch kept from relays[0]'s read
    assert shared.reads == 3
    assert await relays[1].step(wait=False) == 1  # ahead of that batch now: its own read
    assert shared.reads == 4
    assert await relays[0].step(wait=False) == 1  # the newest: relays[1]'s batch, beyond
    assert shared.reads == 4
    assert recorders[0].batches[-2:] == recorders[1].batches[-2:]
    # A consumer that starts from the beginning catches up on the kept batches, in order;
    # only its last read, which finds nothing new, goes to Redis.
    steps = [await lagging.step(wait=False) for _ in range(5)]
    assert steps == [10, 10, 1, 1, 0]
    assert shared.reads == 5
    assert newcomer.batches == recorders[0].batches


def _gated(log: ChangeLog, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False
           ) -> asyncio.Event:
    """The log's first read waits for the returned event (then fails, with `fail`); the
    reads after it go straight to Redis."""
    gate = asyncio.Event()
    real_read = log.read
    calls = 0

    async def first_read_waits(*args: Any, **kwargs: Any) -> Batch:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            if fail:
                raise redis.ConnectionError("Connection to Redis lost")
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(log, "read", first_read_waits)
    return gate


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_consumers_asking_together_wait_for_one_read(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paced alike, the consumers ask at nearly the same moment, before any answer is kept:
    the first read's answer serves them all."""
    log = ChangeLog(store.redis)
    shared = SharedReads(log, max_age_s=0)  # nothing kept: only the read in flight serves
    recorders = [BatchRecorder(f"together-{n}") for n in range(4)]
    relays = [Relay(log, r, shared=shared) for r in recorders]
    for n in range(10):
        await inbound(store, address=f"whatsapp:+33612349{n:03d}")
    gate = _gated(log, monkeypatch)
    steps = [asyncio.create_task(relay.step(wait=False)) for relay in relays]
    await _until(lambda: shared.reads + shared.joined == 4)
    assert (shared.reads, shared.joined) == (1, 3)
    gate.set()
    assert await asyncio.gather(*steps) == [10, 10, 10, 10]
    assert all(r.batches == recorders[0].batches for r in recorders)


async def test_an_idle_read_joined_wakes_every_consumer_when_a_change_comes(
        store: TicketStore) -> None:
    log = ChangeLog(store.redis)
    shared = SharedReads(log)
    recorders = [BatchRecorder(f"idle-{n}") for n in range(2)]
    relays = [Relay(log, r, shared=shared, block_ms=20_000) for r in recorders]
    steps = [asyncio.create_task(relay.step()) for relay in relays]
    await _until(lambda: shared.reads + shared.joined == 2)
    assert not any(step.done() for step in steps)
    await inbound(store, address="whatsapp:+33612349900")
    assert await asyncio.gather(*steps) == [1, 1]
    assert (shared.reads, shared.joined) == (1, 1)


async def test_a_read_that_may_not_wait_is_not_held_up_by_one_that_may(
        store: TicketStore) -> None:
    log = ChangeLog(store.redis)
    shared = SharedReads(log)
    waiting, hurried = BatchRecorder("waits"), BatchRecorder("hurries")
    blocked = asyncio.create_task(Relay(log, waiting, shared=shared, block_ms=20_000).step())
    await _until(lambda: shared.reads == 1)
    assert await Relay(log, hurried, shared=shared).step(wait=False) == 0
    assert (shared.reads, shared.joined) == (2, 0) and not blocked.done()
    await inbound(store, address="whatsapp:+33612349901")
    assert await blocked == 1


async def test_a_failed_read_fails_its_joiners_and_a_cancelled_one_lets_them_read(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    log = ChangeLog(store.redis)
    await inbound(store, address="whatsapp:+33612349902")
    shared = SharedReads(log, max_age_s=0)
    relays = [Relay(log, BatchRecorder(f"fails-{n}"), shared=shared) for n in range(2)]
    gate = _gated(log, monkeypatch, fail=True)
    steps = [asyncio.create_task(relay.step(wait=False)) for relay in relays]
    await _until(lambda: shared.reads + shared.joined == 2)
    gate.set()
    results = await asyncio.gather(*steps, return_exceptions=True)
    assert [type(r) for r in results] == [redis.ConnectionError] * 2

    # The consumer whose read is cancelled (it is stopping) leaves its joiner to read alone.
    shared = SharedReads(log, max_age_s=0)
    owner, joiner = (Relay(log, BatchRecorder(f"cancel-{n}"), shared=shared)
                     for n in range(2))
    _gated(log, monkeypatch)  # the owner's read never gets an answer
    owning = asyncio.create_task(owner.step(wait=False))
    await _until(lambda: shared.reads == 1)
    joining = asyncio.create_task(joiner.step(wait=False))
    await _until(lambda: shared.joined == 1)
    owning.cancel()
    assert await joining == 1
    assert shared.reads == 2
    with pytest.raises(asyncio.CancelledError):
        await owning
