"""The live feed of a web process: ticket changes as they happen, for pages and widgets that
update without a reload (the widget's WebSocket, the workspace's server-sent events).

Each web process tails the change log itself (every partition, from the moment it starts
listening), so a change made through any process, or by a worker, reaches the subscribers
of every process: the log in Redis is the fan-out, with nothing to configure.

The feed says "this ticket changed" (a Change); it carries no history and guarantees no
delivery. A client keeps its own cursor (the last thread event it has shown) and, on each
change, reads what is after the cursor from the store; after a reconnect it does the same
before listening again. So a change missed (a process restart, a subscriber too slow, whose
queue overflowed) costs a re-read, never a lost or doubled message.

The tail runs only while someone listens: a process that serves webhooks alone spends
nothing on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import redis

from bridge.core.changes import Change
from bridge.store.changelog import READ_PER_PARTITION, ChangeLog

log = logging.getLogger("bridge.live")

# A subscriber that falls this far behind loses its queued changes and gets RESYNC instead.
QUEUE_LIMIT = 1000
# How long one read waits for news, and how long the tail lingers once nobody listens.
BLOCK_MS = 1000
IDLE_STOP_S = 30.0
# Entries per partition a read (bridge.store.changelog): a feed that fell behind (Redis
# was away) catches up in reads Redis answers quickly and this event loop parses between
# two webhooks (500 a partition allowed one reply of 128,000 entries).
BATCH = READ_PER_PARTITION
# Each read names all 256 partition streams. While changes keep coming (webhooks, replies),
# reading at most this often lets them arrive in batches rather than one read per change;
# an idle feed's blocking read still returns the moment a change is written.
MIN_READ_INTERVAL_S = 0.01


class Resync:
    """Handed to a subscriber in place of the changes it was too slow to take: it must
    re-read the store (a cursor-based reader loses nothing by it)."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC = Resync()


@dataclass(eq=False)
class Subscription:
    """Changes of the contacts and tickets asked for (or all of them), in log order per
    ticket. `contact_ids` and `ticket_ids` may be changed while subscribed (a visitor's
    new ticket, a page that opens another ticket)."""

    contact_ids: set[str] = field(default_factory=set)
    ticket_ids: set[str] = field(default_factory=set)
    everything: bool = False
    _queue: asyncio.Queue[Change | Resync] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def wants(self, change: Change) -> bool:
        return (self.everything or change.contact_id in self.contact_ids
                or change.ticket_id in self.ticket_ids)

    async def get(self) -> Change | Resync:
        return await self._queue.get()

    def pending(self) -> list[Change | Resync]:
        """Everything already queued, without waiting (a batch after a get())."""
        out: list[Change | Resync] = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out

    def wake(self) -> None:
        """Hand the subscriber a RESYNC now, so that it looks up (its process is stopping)."""
        self._offer(RESYNC)

    def _offer(self, item: Change | Resync) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)


class LiveFeed:
    def __init__(self, change_log: ChangeLog, *, block_ms: int = BLOCK_MS,
                 idle_stop_s: float = IDLE_STOP_S,
                 min_read_interval_s: float = MIN_READ_INTERVAL_S) -> None:
        self._log = change_log
        self._block_ms = block_ms
        self._idle_stop_s = idle_stop_s
        self._min_read_interval_s = min_read_interval_s
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Subscribers arriving together (every page reconnects at once after a deploy) wait
        # for one start: two would each tail the log, and every change would reach each
        # subscriber twice.
        self._starting = asyncio.Lock()
        self.changes_seen = 0

    @contextlib.asynccontextmanager
    async def subscribe(self, *, contact_ids: Iterable[str] = (),
                        ticket_ids: Iterable[str] = (), everything: bool = False
                        ) -> AsyncIterator[Subscription]:
        """Listen from now on. Raises redis.RedisError if the log cannot be read to start."""
        subscription = Subscription(set(contact_ids), set(ticket_ids), everything)
        await self._ensure_tailing()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def _ensure_tailing(self) -> None:
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            # The positions are taken before the subscriber is added, so every change
            # written after subscribe() returns is read.
            positions = await self._log.tail_positions()
            self._task = asyncio.create_task(self._tail(positions), name="live-feed")

    async def _tail(self, positions: dict[int, str]) -> None:
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._closing:
            if not self._subscribers:
                idle_since = idle_since or loop.time()
                if loop.time() - idle_since >= self._idle_stop_s:
                    return
            else:
                idle_since = None
            started = loop.time()
            try:
                batch = await self._log.read(positions, count=BATCH, block_ms=self._block_ms)
            except (redis.RedisError, OSError):
                # Changes written meanwhile are read once Redis answers (the positions
                # stay); subscribers are told to re-read, in case the outage was a restart
                # that lost the tail of the log.
                log.warning("live feed: Redis unavailable; retrying", exc_info=True)
                for subscription in list(self._subscribers):
                    subscription._offer(RESYNC)
                await asyncio.sleep(1.0)
                continue
            except Exception:  # a bug must not leave every listener waiting forever
                log.exception("live feed: reading the change log failed; retrying")
                for subscription in list(self._subscribers):
                    subscription._offer(RESYNC)
                await asyncio.sleep(1.0)
                continue
            positions.update(batch.positions)
            self.changes_seen += len(batch.changes)
            for change in batch.changes:
                for subscription in list(self._subscribers):
                    if subscription.wants(change):
                        subscription._offer(change)
            if batch.changes and not batch.full:  # full: more wait, read on at once
                pause_s = self._min_read_interval_s - (loop.time() - started)
                if pause_s > 0:
                    await asyncio.sleep(pause_s)

    async def close(self) -> None:
        """Stop the tail. A cancellation that lands as the blocking read's own timeout
        fires can come out of redis-py as a TimeoutError, which the tail takes for an
        outage and retries: it then read on and the app's cleanup waited for it forever
        (a test's live server, once). `_closing` ends the loop whatever the read raised,
        and the cancel is repeated until the task has ended."""
        self._closing = True
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
