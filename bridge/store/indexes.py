"""The global ticket list indexes (zsets by status, channel, assignee), kept in line with
the tickets after each change (outside the contact's slot: see repair.py for crashes)."""

from __future__ import annotations

from bridge.core.tickets import (
    Status,
)
from bridge.store import keys
from bridge.store.reads import TicketReads
from bridge.store.records import _s

# The ticket fields the list indexes are built from.
_INDEXED = ("status", "channel", "assignee")



class TicketIndexes(TicketReads):
    async def _reindex_current(self, cid: str) -> None:
        """Reindex the contact's current ticket and the one it follows up, if any."""
        current = _s(await self.redis.hget(keys.contact(cid), "cur"))
        if not current:
            return
        previous = _s(await self.redis.hget(keys.ticket(cid, current), "follow_up_of"))
        await self._reindex(cid, [current, *filter(None, [previous])])

    async def _reindex(
        self, cid: str, ticket_ids: list[str], *, stale_assignees: dict[str, str] | None = None
    ) -> None:
        """Bring the global list indexes in line with the tickets' current fields.

        Idempotent; runs after each change (outside the contact's slot, so not in the
        routing script). A crash between the two leaves a ticket unlisted until the
        provider's retry of that message (see route_inbound), the ticket's next change or
        `bridge reindex`. Two concurrent changes could write
        their index entries in the opposite order: each pass re-reads the ticket's fields
        afterwards and redoes the tickets whose indexed fields changed meanwhile, so the
        last pass wins.
        """
        pending = list(ticket_ids)
        stale = dict(stale_assignees or {})
        for _ in range(10):
            async with self.redis.pipeline(transaction=False) as pipe:
                for tid in pending:
                    pipe.hmget(keys.ticket(cid, tid), *_INDEXED)
                rows = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for tid, old_assignee in stale.items():
                    if old_assignee:
                        pipe.zrem(keys.index("assignee", old_assignee), tid)
                for tid, (status, channel, assignee) in zip(pending, rows, strict=True):
                    score = {tid: int(tid)}
                    pipe.hset(keys.TICKET_CONTACT, tid, cid)
                    pipe.zadd(keys.index("all"), score)
                    pipe.zadd(keys.index("contact", cid), score)
                    pipe.zadd(keys.index("channel", _s(channel)), score)
                    for s in Status:
                        if s.value == _s(status):
                            pipe.zadd(keys.index("status", s.value), score)
                        else:
                            pipe.zrem(keys.index("status", s.value), tid)
                    if _s(assignee):
                        pipe.zadd(keys.index("assignee", _s(assignee)), score)
                for tid in pending:
                    pipe.hmget(keys.ticket(cid, tid), *_INDEXED)
                results = await pipe.execute()
            fields_after = results[-len(pending):]
            pending = [tid for tid, row, after in zip(pending, rows, fields_after, strict=True)
                       if list(map(_s, row)) != list(map(_s, after))]
            stale = {}
            if not pending:
                return

    async def reindex_all(self) -> int:
        """Rebuild every index from the tickets themselves (`bridge reindex`)."""
        count = 0
        async for key in self.redis.scan_iter(match=keys.TICKETS_GLOB, count=1000):
            # {p:NNN}:c:<contact>:t:<ticket>, not the ticket's events, deliveries, ...
            parts = _s(key).split(":")
            if len(parts) != 6:
                continue
            cid, tid = parts[3], parts[5]
            await self._reindex(cid, [tid])
            count += 1
        return count
