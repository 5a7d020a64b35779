"""Reading tickets, contacts, lists and threads (newest first, paged by cursor)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bridge.core.changes import Change, ChangeKind
from bridge.core.teams import STRANDED_NAMED, Person, could_still_hold
from bridge.core.tickets import (
    OUTBOUND_EVENTS,
    Contact,
    Delivery,
    Event,
    EventType,
    Status,
    Ticket,
)
from bridge.store import keys
from bridge.store.records import NotFound, StoreBase, _decode_map, _s, read_hashes

# Where events_of_change looks for an update's events: from this long before its log entry,
# among at most this many events.
_OP_WINDOW_MS = 5_000
_OP_SCAN = 500


class TicketReads(StoreBase):
    async def contact_of(self, ticket_id: str) -> str:
        cid = _s(await self.redis.hget(keys.TICKET_CONTACT, ticket_id))
        if not cid:
            raise NotFound(f"ticket {ticket_id} not found")
        return cid

    async def get_ticket(self, ticket_id: str) -> Ticket:
        cid = await self.contact_of(ticket_id)
        raw = await self.redis.hgetall(keys.ticket(cid, ticket_id))
        if not raw:
            raise NotFound(f"ticket {ticket_id} not found")
        return Ticket.from_fields(_decode_map(raw))

    async def get_contact(self, contact_id: str) -> Contact:
        f = _decode_map(await self.redis.hgetall(keys.contact(contact_id)))
        if not f:
            raise NotFound(f"contact {contact_id} not found")
        return Contact(
            id=contact_id,
            channel=f.get("channel", ""),
            address=f.get("address", ""),
            name=f.get("name", ""),
            wa_id=f.get("wa_id", ""),
            external_user_id=f.get("external_user_id", ""),
            locale=f.get("locale", ""),
            window_until_ms=int(f.get("window_until_ms") or 0),
            opted_out=f.get("opted_out") == "1",
        )

    async def get_tickets(self, ticket_ids: list[str]) -> list[Ticket]:
        if not ticket_ids:
            return []
        cids = await self.redis.hmget(keys.TICKET_CONTACT, ticket_ids)
        found = [(_s(c), tid) for tid, c in zip(ticket_ids, cids, strict=True) if c]
        return await self.tickets_in(found)

    async def tickets_in(self, pairs: list[tuple[str, str]]) -> list[Ticket]:
        """Tickets by (contact id, ticket id), the missing ones left out. A change log
        reader uses this: the ticket -> contact index is written just after the change, so
        the reader may get there first."""
        rows = await read_hashes(self._commands, [keys.ticket(cid, tid) for cid, tid in pairs])
        return [Ticket.from_fields(r) for r in rows if r]

    async def list_tickets(
        self,
        *,
        status: Status | None = None,
        channel: str = "",
        assignee: str = "",
        contact_id: str = "",
        cursor: int | None = None,
        limit: int = 50,
        keep: Callable[[Ticket], bool] | None = None,
    ) -> tuple[list[Ticket], int | None]:
        """Newest tickets first, in pages. The cursor is the last ticket id of the previous
        page. One filter costs O(page); several are read from the most selective index and
        the rest are checked on the loaded tickets, as is `keep` (what the caller may see)."""
        filters: list[str] = []
        if status:
            filters.append(keys.index("status", status.value))
        if channel:
            filters.append(keys.index("channel", channel))
        if assignee:
            filters.append(keys.index("assignee", assignee))
        if contact_id:
            filters.append(keys.index("contact", contact_id))
        if not filters:
            filters.append(keys.index("all"))
        async with self.redis.pipeline(transaction=False) as pipe:
            for f in filters:
                pipe.zcard(f)
            sizes = await pipe.execute()
        source = filters[sizes.index(min(sizes))]
        page: list[Ticket] = []
        upper: str = f"({cursor}" if cursor is not None else "+inf"
        # One match beyond the page says whether there is a next one: counting the source
        # index instead would hand out a cursor to an empty page when the entries left
        # there fail the other filters.
        batch = max(limit + 1, 20)
        while len(page) <= limit:
            ids = [_s(i) for i in await self.redis.zrevrangebyscore(
                source, upper, "-inf", start=0, num=batch)]
            if not ids:
                break
            for t in await self.get_tickets(ids):
                if (
                    (status is None or t.status is status)
                    and (not channel or t.channel == channel)
                    and (not assignee or t.assignee == assignee)
                    and (not contact_id or t.contact_id == contact_id)
                    and (keep is None or keep(t))
                ):
                    page.append(t)
                    if len(page) > limit:
                        break
            if len(ids) < batch:
                break
            upper = f"({ids[-1]}"
        has_more = len(page) > limit > 0
        page = page[:limit]
        return page, (int(page[-1].id) if has_more else None)

    async def unsolved_ids(self, keep: Callable[[Ticket], bool], *, assignee: str = "",
                           limit: int = 10) -> list[str]:
        """Ids of up to `limit` tickets not closed (closed ones are history) that `keep`
        picks, oldest first: what a refusal names."""
        found: list[str] = []
        for status in (s for s in Status if s is not Status.CLOSED):
            page, _ = await self.list_tickets(status=status, assignee=assignee, keep=keep,
                                              limit=limit - len(found))
            found += [t.id for t in page]
            if len(found) >= limit:
                break
        return sorted(found, key=int)

    async def stranded_by(self, holder: str, after: Person | None) -> list[str]:
        """The unsolved tickets `holder` holds that `after` (their record once changed;
        None: removed) could no longer hold, as many as a refusal names."""
        return await self.unsolved_ids(lambda t: not could_still_hold(after, t.group),
                                       assignee=holder, limit=STRANDED_NAMED)

    async def events(
        self, ticket_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[Event], str | None]:
        """A page of the thread, newest first; the cursor is the last event id returned."""
        cid = await self.contact_of(ticket_id)
        upper = f"({cursor}" if cursor else "+"
        raw = await self.redis.xrevrange(keys.events(cid, ticket_id), upper, "-", count=limit + 1)
        more = len(raw) > limit
        events = await self._with_deliveries(cid, ticket_id, raw[:limit])
        return events, (events[-1].id if more and events else None)

    @staticmethod
    def _event(ticket_id: str, eid: str, f: dict[str, str],
               states: dict[str, dict[str, str]]) -> Event:
        state = states.get(eid)
        etype = EventType(f["type"])
        if state is None and etype in OUTBOUND_EVENTS:
            # No worker has touched it yet.
            state = {"state": Delivery.QUEUED.value}
        return Event(
            id=eid,
            ticket_id=ticket_id,
            type=etype,
            at_ms=int(f["at_ms"]),
            author=f.get("author", ""),
            body=f.get("body", ""),
            data=json.loads(f.get("data") or "{}"),
            delivery=Delivery(state["state"]) if state else None,
            error_code=state.get("error_code", "") if state else "",
            error_message=state.get("error_message", "") if state else "",
        )

    async def get_event(self, ticket_id: str, event_id: str) -> Event:
        cid = await self.contact_of(ticket_id)
        raw = await self.redis.xrange(keys.events(cid, ticket_id), event_id, event_id)
        if not raw:
            raise NotFound(f"event {event_id} not found")
        state = _s(await self.redis.hget(keys.deliveries(cid, ticket_id), event_id))
        states = {event_id: json.loads(state)} if state else {}
        return self._event(ticket_id, event_id, _decode_map(raw[0][1]), states)

    async def events_after(self, ticket_id: str, after: str | None = None, *,
                           limit: int = 100) -> list[Event]:
        """Up to `limit` events written after the event id `after` (the whole thread from the
        start without one), oldest first: what a client that saw `after` has not seen."""
        cid = await self.contact_of(ticket_id)
        lower = f"({after}" if after else "-"
        raw = await self.redis.xrange(keys.events(cid, ticket_id), lower, "+", count=limit)
        return await self._with_deliveries(cid, ticket_id, raw)

    async def events_of_change(self, change: Change) -> list[Event]:
        """The thread events a change log entry recorded, oldest first: the routed message
        (or CSAT answer), the events an update wrote (found by the update's op token,
        which each of them carries), the outbound message whose delivery moved. Empty when
        the ticket or its events are gone (a log entry can outlive what it describes)."""
        try:
            if change.kind is ChangeKind.UPDATED:
                if not change.op or not change.event_types:
                    return []
                cid = await self.contact_of(change.ticket_id)
                # The events and the entry were written in one transaction, so within the
                # entry's millisecond or just before it; the window allows for a slow EXEC.
                raw = await self.redis.xrange(keys.events(cid, change.ticket_id),
                                              str(max(0, change.at_ms - _OP_WINDOW_MS)), "+",
                                              count=_OP_SCAN)
                mine = [(eid, f) for eid, f in raw if _s(f.get(b"op")) == change.op]
                return await self._with_deliveries(cid, change.ticket_id, mine)
            if change.event_id:
                return [await self.get_event(change.ticket_id, change.event_id)]
        except NotFound:
            return []
        return []

    async def _with_deliveries(self, cid: str, ticket_id: str, raw: list[Any]) -> list[Event]:
        out_ids = [_s(eid) for eid, f in raw if _s(f.get(b"type")) in OUTBOUND_EVENTS]
        states: dict[str, dict[str, str]] = {}
        if out_ids:
            vals = await self.redis.hmget(keys.deliveries(cid, ticket_id), out_ids)
            states = {eid: json.loads(_s(v)) for eid, v in zip(out_ids, vals, strict=True) if v}
        return [self._event(ticket_id, _s(eid), _decode_map(f), states) for eid, f in raw]
