"""Bulk export reads: tickets changed since a time and their thread events, in pages.

Tickets are walked in id order (the global index), so a page costs O(page) reads but may
hold fewer rows than asked when many tickets were not updated since then (a cursor over the
walk, like SCAN): follow next_cursor until it is null.
"""

from __future__ import annotations

from bridge.core.tickets import Event, Ticket
from bridge.store import keys
from bridge.store.records import NotFound, _s
from bridge.store.tickets import TicketStore

# Ticket ids looked at per page, at most (bounds a page's cost when few tickets match).
SCAN_FACTOR = 5


async def tickets_since(store: TicketStore, since_ms: int, *, after_id: int = 0,
                        limit: int = 100) -> tuple[list[Ticket], int | None]:
    """Tickets updated at or after since_ms with an id above after_id, in id order; the
    cursor to continue from (None: the walk is over)."""
    ids = [_s(i) for i in await store.redis.zrangebyscore(
        keys.index("all"), f"({after_id}", "+inf", start=0, num=limit * SCAN_FACTOR)]
    if not ids:
        return [], None
    page: list[Ticket] = []
    for ticket in await store.get_tickets(ids):
        if ticket.updated_at_ms >= since_ms:
            page.append(ticket)
            if len(page) == limit:  # full: continue after the last ticket returned
                return page, int(ticket.id)
    if len(ids) < limit * SCAN_FACTOR:
        return page, None
    return page, int(ids[-1])


async def events_of(store: TicketStore, ticket_id: str, since_ms: int, *, after_event: str = "",
                    limit: int = 100) -> tuple[list[Event], str | None]:
    """One ticket's events at or after since_ms (after after_event), oldest first."""
    try:
        cid = await store.contact_of(ticket_id)
    except NotFound:
        return [], None
    start = f"({after_event}" if after_event else f"{since_ms}-0"
    raw = await store.redis.xrange(keys.events(cid, ticket_id), start, "+", count=limit + 1)
    more = len(raw) > limit
    # The thread reader's own decoding (delivery states included).
    events = await store._with_deliveries(cid, ticket_id, raw[:limit])
    return events, (events[-1].id if more and events else None)


async def events_since(store: TicketStore, since_ms: int, *, cursor: tuple[int, str] = (0, ""),
                       limit: int = 100) -> tuple[list[Event], tuple[int, str] | None]:
    """Events at or after since_ms of the tickets updated since then, ticket by ticket
    (ids in order), each ticket's oldest first. The cursor is (ticket id walked up to,
    last event of the ticket in progress)."""
    after_id, after_event = cursor
    out: list[Event] = []
    if after_event:  # finish the ticket the last page stopped in
        events, more = await events_of(store, str(after_id), since_ms, after_event=after_event,
                                       limit=limit)
        out += events
        if more:
            return out, (after_id, more)
    while len(out) < limit:
        tickets, next_id = await tickets_since(store, since_ms, after_id=after_id, limit=20)
        for ticket in tickets:
            events, more = await events_of(store, ticket.id, since_ms,
                                           limit=limit - len(out))
            out += events
            if more:
                return out, (int(ticket.id), more)
            after_id = int(ticket.id)
            if len(out) >= limit:
                return out, (after_id, "")
        if next_id is None:
            return out, None
        after_id = next_id
    return out, (after_id, "")
