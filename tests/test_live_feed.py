"""The live feed against a real Redis: subscribers get the changes of what they asked for,
from the moment they subscribe, whichever process (feed) made the change; a slow subscriber
is told to re-read instead of being handed a partial stream; the tail stops when nobody
listens."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from bridge.core.changes import Change, ChangeKind
from bridge.core.tickets import EventType
from bridge.store.changelog import Batch, ChangeLog
from bridge.store.tickets import TicketStore
from bridge.web import live
from bridge.web.live import RESYNC, LiveFeed, Resync, Subscription
from tests.factories import ids, inbound, now_ms

WAIT_S = 10


async def _next(subscription: Subscription) -> Change | Resync:
    return await asyncio.wait_for(subscription.get(), WAIT_S)


async def test_a_subscriber_gets_its_contacts_changes_from_now_on(store: TicketStore) -> None:
    earlier = await inbound(store, "before subscribing", address="whatsapp:+33600000001")
    feed = LiveFeed(ChangeLog(store.redis), block_ms=100)
    try:
        async with feed.subscribe(contact_ids={earlier.contact_id}) as mine, \
                feed.subscribe(everything=True) as everything:
            other = await inbound(store, "someone else", address="whatsapp:+33600000002")
            again = await inbound(store, "me again", address="whatsapp:+33600000001")
            got = await _next(mine)
            assert isinstance(got, Change)
            assert (got.kind, got.ticket_id, got.event_id) == (
                ChangeKind.ROUTED, ids(again), again.event_id)
            seen = [await _next(everything), await _next(everything)]
            assert [c.ticket_id for c in seen if isinstance(c, Change)] == [ids(other),
                                                                              ids(again)]
            await store.update_ticket(ids(again), author="alice", now_ms=now_ms(),
                                      event=(EventType.AGENT_REPLY, "Hello", {}))
            reply = await _next(mine)
            assert isinstance(reply, Change)
            assert [e.body for e in await store.events_of_change(reply)] == ["Hello"]
            assert mine.pending() == []  # the other contact's change was not for it
    finally:
        await feed.close()


async def test_two_processes_each_see_a_change_made_through_either(
        redis_url: str, store: TicketStore) -> None:
    """Two feeds on two connections stand for two web processes."""
    other_process = redis.asyncio.Redis.from_url(redis_url)
    first = LiveFeed(ChangeLog(store.redis), block_ms=100)
    second = LiveFeed(ChangeLog(other_process), block_ms=100)
    try:
        message = await inbound(store, "hi")
        async with first.subscribe(ticket_ids={ids(message)}) as on_first, \
                second.subscribe(ticket_ids={ids(message)}) as on_second:
            await store.update_ticket(ids(message), author="alice", now_ms=now_ms(),
                                      event=(EventType.NOTE, "seen", {}))
            for subscription in (on_first, on_second):
                change = await _next(subscription)
                assert isinstance(change, Change) and change.ticket_id == ids(message)
    finally:
        await first.close()
        await second.close()
        await other_process.aclose()


async def test_a_subscriber_too_slow_is_told_to_resync(store: TicketStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "QUEUE_LIMIT", 3)
    feed = LiveFeed(ChangeLog(store.redis), block_ms=100)
    try:
        async with feed.subscribe(everything=True) as slow:
            for n in range(5):
                await inbound(store, address=f"whatsapp:+3360000010{n}")
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while feed.changes_seen < 5:
                assert asyncio.get_running_loop().time() < deadline, "the feed read nothing"
                await asyncio.sleep(0.05)
            queued = slow.pending()
            assert RESYNC in queued and len(queued) <= 3
    finally:
        await feed.close()


async def test_the_tail_stops_when_nobody_listens_and_starts_again(store: TicketStore) -> None:
    feed = LiveFeed(ChangeLog(store.redis), block_ms=50, idle_stop_s=0.1)
    try:
        async with feed.subscribe(everything=True):
            assert feed._task is not None
        task = feed._task
        assert task is not None
        await asyncio.wait_for(task, WAIT_S)  # it returns on its own once idle
        async with feed.subscribe(everything=True) as back:
            message = await inbound(store, "after the restart")
            change = await _next(back)
            assert isinstance(change, Change) and change.ticket_id == ids(message)
    finally:
        await feed.close()


class CountingLog(ChangeLog):
    reads = 0
    hold = False  # reads wait while set, as if Redis did not answer
    max_per_read = 0

    async def read(self, positions: dict[int, str], *, count: int,  # type: ignore[override]
                   block_ms: int | None) -> Batch:
        while self.hold:
            await asyncio.sleep(0.01)
        self.reads += 1
        batch = await super().read(positions, count=count, block_ms=block_ms)
        self.max_per_read = max(self.max_per_read, len(batch.changes))
        return batch


async def test_changes_written_back_to_back_reach_subscribers_in_few_reads(
        store: TicketStore) -> None:
    """While changes keep coming the feed reads at most every min_read_interval_s (each read
    names every partition); every change still reaches the subscriber, once."""
    written = 40
    counting = CountingLog(store.redis)
    feed = LiveFeed(counting, block_ms=100, min_read_interval_s=0.2)
    try:
        async with feed.subscribe(everything=True) as everything:
            reads_before = counting.reads
            for n in range(written):
                await inbound(store, f"message {n}", address=f"whatsapp:+336000001{n:02d}")
            got = [await _next(everything) for _ in range(written)]
            reads = counting.reads - reads_before
    finally:
        await feed.close()
    assert all(isinstance(c, Change) for c in got)
    assert len({c.ticket_id for c in got if isinstance(c, Change)}) == written  # one each
    assert reads <= written // 4, reads


async def test_subscribers_arriving_together_share_one_tail(store: TicketStore) -> None:
    """After a deploy every page subscribes at once: one reader of the log, and each change
    reaches each subscriber once."""
    feed = LiveFeed(ChangeLog(store.redis), block_ms=100)
    entered: list[Subscription] = []
    release = asyncio.Event()

    async def page() -> list[Change | Resync]:
        async with feed.subscribe(everything=True) as subscription:
            entered.append(subscription)
            await release.wait()
            got = [await _next(subscription)]
            await asyncio.sleep(0.3)  # time for a second copy to arrive, were there one
            return got + subscription.pending()

    pages = [asyncio.create_task(page()) for _ in range(5)]
    try:
        while len(entered) < 5:
            await asyncio.sleep(0.01)
        tails = [t for t in asyncio.all_tasks() if t.get_name() == "live-feed"]
        assert len(tails) == 1
        message = await inbound(store, "once")
        release.set()
        for got in await asyncio.gather(*pages):
            assert [c.ticket_id for c in got if isinstance(c, Change)] == [ids(message)]
    finally:
        for task in pages:
            task.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
        await feed.close()
        for tail in [t for t in asyncio.all_tasks() if t.get_name() == "live-feed"]:
            tail.cancel()  # a second tail, were there one, is the feed's no more


class _CancelTurnsIntoTimeout(ChangeLog):
    """A blocking read whose cancellation comes out as redis-py's TimeoutError, as when
    the cancel lands the moment the read's own timeout fires."""

    reads = 0

    async def read(self, *args: object, **kwargs: object) -> Batch:  # type: ignore[override]
        self.reads += 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise redis.exceptions.TimeoutError("Timeout reading from socket") from None
        raise AssertionError("not reached")


async def test_closing_ends_the_tail_even_when_its_cancel_comes_out_as_a_timeout(
        store: TicketStore) -> None:
    """Once the tail took such a timeout for an outage and read on: the app's cleanup
    waited for it forever (a live server's stop in a test run)."""
    changes = _CancelTurnsIntoTimeout(store.redis)
    feed = LiveFeed(changes, block_ms=100)
    async with feed.subscribe(everything=True):
        while changes.reads == 0:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(feed.close(), timeout=10)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "live-feed"] == []


async def test_a_feed_behind_on_one_partition_catches_up_a_few_entries_a_read(
        store: TicketStore) -> None:
    """A feed that fell behind (Redis was away) reads a few entries per partition at a time
    and reads on at once while more wait: every change arrives, in order."""
    counting = CountingLog(store.redis)
    feed = LiveFeed(counting, block_ms=100, min_read_interval_s=5.0)
    written = live.BATCH * 2 + 3
    counting.hold = True
    try:
        async with feed.subscribe(everything=True) as everything:
            for n in range(written):  # one contact: one partition
                await inbound(store, f"message {n}", address="whatsapp:+33600000444")
            counting.hold = False
            got = [await _next(everything) for _ in range(written)]
    finally:
        await feed.close()
    assert [c.event_id for c in got if isinstance(c, Change)] == sorted(
        (c.event_id for c in got if isinstance(c, Change)), key=lambda e: tuple(
            int(x) for x in e.split("-")))
    assert len(got) == written
    # Read in batches of at most BATCH from that partition; with a 5 s pause between
    # reads that were not full, the test would have timed out waiting.
    assert counting.max_per_read <= live.BATCH
