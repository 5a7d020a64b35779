"""What the web chat widget keeps in Redis besides the tickets: the visitor's view of the
thread across all the contact's tickets, the read position, flood-control counters and
typing indicators (pub/sub: ephemeral, never stored)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from bridge.core.tickets import OUTBOUND_EVENTS, Delivery, Event, delivery_advances
from bridge.core.visitor_thread import LOOK_BACK_MS, READABLE, EventKey
from bridge.store import keys
from bridge.store.reads import TicketReads
from bridge.store.records import _decode_map, _s
from bridge.store.scripts import Script
from bridge.store.tickets import TicketStore

# The visitor's thread spans their latest tickets; older ones are history nobody pages to.
MAX_TICKETS = 50
# A read position moves at most this many pages of events a call (the widget sends its
# newest key again with the next event it shows, and the position moves on from there).
MAX_READ_PAGES = 20
TYPING_CHANNEL = f"{keys.PREFIX}:widget:typing"
# A stream entry as redis-py returns it: (id, fields).
RawEvent = tuple[bytes, dict[bytes, bytes]]


def _start_after(after: EventKey | None, ticket_id: str) -> str:
    """XRANGE's start in a ticket's stream for the events ordered after `after` (EventKey
    order: stream id, then ticket id)."""
    if after is None:
        return "-"
    # The same stream id in a later ticket comes after `after`; in this one or an earlier
    # one, it is `after` itself or before it.
    return after.event_id if int(ticket_id) > after.ticket_id else f"({after.event_id}"


def flood_key(kind: str, ident: str) -> str:
    return f"{keys.PREFIX}:flood:{kind}:{ident}"


# One atomic step: a counter that exists only with its expiry (INCR then PEXPIRE in two
# calls could leave a counter without one, refusing its owner forever).
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


@dataclass(frozen=True)
class Page:
    events: list[Event]
    # Reading "after": the events stop before the newest there are (read again from the
    # last one). Reading "before": the cursor of the next older page, None at the start.
    more: bool = False
    before: EventKey | None = None


class WidgetStore:
    def __init__(self, store: TicketStore) -> None:
        self.store = store
        self.redis: Redis = store.redis
        self._count = Script(self.redis, _COUNT_SCRIPT)

    async def ticket_ids(self, cid: str) -> list[str]:
        """The contact's latest tickets, its current one included (listed by the routing
        script itself, before the indexes catch up)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(keys.index("contact", cid), 0, MAX_TICKETS - 1)
            pipe.hget(keys.contact(cid), "cur")
            listed, current = await pipe.execute()
        ids = {_s(t) for t in listed}
        if current:
            ids.add(_s(current))
        return sorted(ids, key=int)

    async def _events(self, cid: str, raw_by_ticket: dict[str, list[RawEvent]]) -> list[Event]:
        async with self.redis.pipeline(transaction=False) as pipe:
            wanted: list[tuple[str, list[str]]] = []
            for tid, raw in raw_by_ticket.items():
                out = [_s(eid) for eid, f in raw if _s(f.get(b"type")) in OUTBOUND_EVENTS]
                if out:
                    pipe.hmget(keys.deliveries(cid, tid), out)
                    wanted.append((tid, out))
            found = await pipe.execute() if wanted else []
        states: dict[tuple[str, str], dict[str, str]] = {}
        for (tid, out), vals in zip(wanted, found, strict=True):
            for eid, val in zip(out, vals, strict=True):
                if val:
                    states[(tid, eid)] = json.loads(_s(val))
        events = []
        for tid, raw in raw_by_ticket.items():
            for eid_b, fields in raw:
                eid = _s(eid_b)
                state = states.get((tid, eid))
                events.append(TicketReads._event(tid, eid, _decode_map(fields),
                                                 {eid: state} if state else {}))
        return events

    async def events_after(self, cid: str, after: EventKey | None, *,
                           ticket_ids: list[str] | None = None, limit: int = 200) -> Page:
        """The events after `after`, oldest first, and those of the LOOK_BACK_MS before it
        (the caller drops those it has). With `more`, read again after the last one.

        The two are read apart: the look-back could hold more than a page (a burst of a few
        hundred replies within LOOK_BACK_MS), and a page cut inside it would end before
        `after` on every read, so that a reader never got past it."""
        tids = ticket_ids if ticket_ids is not None else await self.ticket_ids(cid)
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in tids:
                pipe.xrange(keys.events(cid, tid), _start_after(after, tid), "+", count=limit)
            if after is not None:
                # Newest first: past `limit`, the events nearest the cursor are the ones kept
                # (a late event of another ticket lands just below it).
                for tid in tids:
                    pipe.xrevrange(keys.events(cid, tid), after.event_id,
                                   f"{max(0, after.ms - LOOK_BACK_MS)}-0", count=limit)
            rows = await pipe.execute()
        forward = dict(zip(tids, rows[:len(tids)], strict=True))
        # A ticket cut at `limit` may have more events than the others: nothing past its
        # last one goes out in this page, or they would overtake its unread rest.
        cut = min((EventKey.of(tid, _s(r[-1][0])) for tid, r in forward.items()
                   if len(r) >= limit), default=None)
        raw: dict[str, list[RawEvent]] = {}
        for tid, back in zip(tids, rows[len(tids):], strict=False):
            raw[tid] = [row for row in reversed(back)
                        if after is None or EventKey.of(tid, _s(row[0])) <= after]
        for tid, ahead in forward.items():
            raw.setdefault(tid, []).extend(ahead)
        events = sorted(await self._events(cid, raw), key=lambda e: EventKey.of(e.ticket_id, e.id))
        if cut is not None:
            events = [e for e in events if EventKey.of(e.ticket_id, e.id) <= cut]
        return Page(events, more=cut is not None)

    async def events_before(self, cid: str, before: EventKey | None, *, limit: int = 50
                            ) -> Page:
        """A page of history, newest first, strictly before `before`."""
        tids = await self.ticket_ids(cid)
        upper = before.event_id if before else "+"
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in tids:
                # +2: the cursor event itself (inclusive bound), and one to tell "more".
                pipe.xrevrange(keys.events(cid, tid), upper, "-", count=limit + 2)
            rows = await pipe.execute()
        merged = sorted(((EventKey.of(tid, _s(eid)), tid, eid, f)
                         for tid, r in zip(tids, rows, strict=True) for eid, f in r),
                        key=lambda row: row[0], reverse=True)
        if before is not None:
            merged = [row for row in merged if row[0] < before]
        more = len(merged) > limit
        merged = merged[:limit]
        by_ticket: dict[str, list[RawEvent]] = {}
        for _, tid, eid, f in merged:
            by_ticket.setdefault(tid, []).append((eid, f))
        events = sorted(await self._events(cid, by_ticket),
                        key=lambda e: EventKey.of(e.ticket_id, e.id), reverse=True)
        return Page(events, before=merged[-1][0] if more and merged else None)

    # ---------------------------------------------------------------- read position

    async def read_position(self, cid: str) -> EventKey | None:
        raw = _s(await self.redis.hget(keys.contact(cid), "widget_read"))
        try:
            return EventKey.parse(raw) if raw else None
        except ValueError:
            return None

    async def mark_read(self, cid: str, upto: EventKey) -> tuple[int, EventKey | None]:
        """The visitor has seen everything up to `upto`: the agents' messages until then
        become `read` (forward only; each move is a delivery change in the log, as a
        WhatsApp read receipt is). A position past the thread's newest event stops at it,
        so a client cannot claim a future it has not seen. Returns how many moved and the
        read position now."""
        current = await self.read_position(cid)
        if current is not None and upto <= current:
            return 0, current
        seen: dict[EventKey, Event] = {}
        page = await self.events_after(cid, current)
        for _ in range(MAX_READ_PAGES):
            keyed = [(EventKey.of(e.ticket_id, e.id), e) for e in page.events]
            seen.update((key, event) for key, event in keyed if key <= upto)
            if not page.more or not keyed or keyed[-1][0] >= upto:
                break
            # Each page ends later than the last: a thread longer than a page is read on.
            page = await self.events_after(cid, keyed[-1][0])
        if not seen or (current is not None and max(seen) <= current):
            return 0, current
        upto = max(seen)
        moved = 0
        for key in sorted(seen):
            event = seen[key]
            if event.type not in READABLE:
                continue
            if event.delivery is None or not delivery_advances(event.delivery, Delivery.READ):
                continue
            state = await self.store.delivery_state(event.ticket_id, event.id)
            await self.store.set_delivery(event.ticket_id, event.id,
                                          {**state, "state": Delivery.READ.value})
            moved += 1
        # Events exist, so the contact does: no field is written onto a missing contact.
        await self.redis.hset(keys.contact(cid), "widget_read", str(upto))
        return moved, upto

    # ---------------------------------------------------------------- flood control

    async def already_stored(self, cid: str, provider_id: str) -> bool:
        """Whether the contact's message with this provider id is stored (within the
        dedupe window the routing script keeps)."""
        return await self.redis.zscore(keys.seen(cid), provider_id) is not None

    async def take(self, kind: str, ident: str, *, limit: int, window_s: int) -> float:
        """Count one request against the caller's window (it starts with the caller's first
        request, so a burst cannot straddle two windows); 0 when allowed, else the seconds
        until the window ends (Retry-After)."""
        count, ttl_ms = await self._count(keys=[flood_key(kind, ident)], args=[window_s * 1000])
        return 0.0 if int(count) <= limit else max(int(ttl_ms), 1) / 1000

    # ---------------------------------------------------------------- typing indicators

    async def publish_typing(self, cid: str, who: str) -> None:
        await self.redis.publish(TYPING_CHANNEL, json.dumps({"c": cid, "who": who}))

    async def typing_signals(self, *, while_: Callable[[], bool]
                             ) -> AsyncIterator[tuple[str, str]]:
        """(contact id, who) for every typing signal published by any process, as long as
        `while_()` holds (checked every second)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(TYPING_CHANNEL)
            while while_():
                # A bounded wait rather than listen(): a cancelled listen() can leave the
                # connection's read lock held, and closing the pubsub then waits forever.
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                try:
                    data = json.loads(_s(message["data"]))
                    yield str(data["c"]), str(data["who"])
                except (ValueError, KeyError, TypeError):
                    continue
        finally:
            # Bounded: closing after a cancelled read must not hold up the process's stop.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await pubsub.aclose()
