"""The global ticket list indexes (zsets by status, channel, assignee), kept in line with
the tickets after each change (outside the contact's slot: see repair.py for crashes)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bridge.core.tickets import (
    Status,
)
from bridge.store import keys
from bridge.store.pipelining import AutoPipeline
from bridge.store.reads import TicketReads
from bridge.store.records import _s

# The ticket fields the list indexes are built from.
_INDEXED = ("status", "channel", "assignee")
# Iterating the enum and reading each member's .value cost 2.5% of a new conversation's CPU
# in the web process (py-spy); the values do not change.
_STATUS_VALUES = tuple(s.value for s in Status)



class TicketIndexes(TicketReads):
    def __init__(self, redis: Redis, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._index_writes = AutoPipeline(redis)

    async def _reindex_current(self, cid: str) -> None:
        """Reindex the contact's current ticket and the one it follows up, if any."""
        current = _s(await self.redis.hget(keys.contact(cid), "cur"))
        if not current:
            return
        previous = _s(await self.redis.hget(keys.ticket(cid, current), "follow_up_of"))
        await self._reindex(cid, [current, *filter(None, [previous])])

    async def _reindex(
        self, cid: str, ticket_ids: list[str], *, stale_assignees: dict[str, str] | None = None,
        known: dict[str, tuple[str, str, str]] | None = None,
    ) -> None:
        """Bring the global list indexes in line with the tickets' current fields.

        Idempotent; runs after each change (outside the contact's slot, so not in the
        routing script). A crash between the two leaves a ticket unlisted until the
        provider's retry of that message (see route_inbound), the ticket's next change or
        `bridge reindex`. Two concurrent changes could write
        their index entries in the opposite order: each pass re-reads the ticket's fields
        afterwards and redoes the tickets whose indexed fields changed meanwhile, so the
        last pass wins.

        `known`: ticket id -> (status, channel, assignee) the caller just wrote (a ticket the
        routing script opened): the first read is skipped, and a new ticket, in no status
        index yet, needs no removal from the others. A concurrent change is still caught by
        the read that follows the writes.
        """
        pending = list(ticket_ids)
        stale = dict(stale_assignees or {})
        fresh = dict(known or {})
        for _ in range(10):
            if all(tid in fresh for tid in pending):
                rows: list[Any] = [list(fresh[tid]) for tid in pending]
            else:
                fresh = {}
                rows = await self._index_writes(
                    [("HMGET", keys.ticket(cid, tid), *_INDEXED) for tid in pending])
            commands: list[tuple[Any, ...]] = []
            for tid, old_assignee in stale.items():
                if old_assignee:
                    commands.append(("ZREM", keys.index("assignee", old_assignee), tid))
            for tid, (status, channel, assignee) in zip(pending, rows, strict=True):
                score = int(tid)
                commands += [("HSET", keys.TICKET_CONTACT, tid, cid),
                             ("ZADD", keys.index("all"), score, tid),
                             ("ZADD", keys.index("contact", cid), score, tid),
                             ("ZADD", keys.index("channel", _s(channel)), score, tid)]
                status = _s(status)
                for value in _STATUS_VALUES:
                    if value == status:
                        commands.append(("ZADD", keys.index("status", value), score, tid))
                    elif tid not in fresh:
                        commands.append(("ZREM", keys.index("status", value), tid))
                if _s(assignee):
                    commands.append(("ZADD", keys.index("assignee", _s(assignee)), score, tid))
            for tid in pending:
                commands.append(("HMGET", keys.ticket(cid, tid), *_INDEXED))
            # Shared round trips with the other requests of this loop iteration.
            results = await self._index_writes.checked(commands)
            fields_after = results[-len(pending):]
            pending = [tid for tid, row, after in zip(pending, rows, fields_after, strict=True)
                       if list(map(_s, row)) != list(map(_s, after))]
            stale = {}
            fresh = {}
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
