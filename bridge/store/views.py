"""Saved views in Redis: their definitions, and one sorted set per view (and per group of
a grouped view) of the tickets it matches, scored by creation time (ms).

A view's count is ZCARD (ZCOUNT over a range of creation times for aging), a page is a
range read from a cursor: both cost O(log n + page) whatever the number of tickets. The sets
are kept in line by `refresh` (the relay's teams consumer, workers/teams.py, after each
change; a view is built from every ticket when it is saved), so they trail a change by the
relay's delay. The sets are derived data: `rebuild` makes one again from the tickets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from bridge.core.tickets import Ticket
from bridge.core.views import Sort, View, parse_view
from bridge.store import keys
from bridge.store.reads import TicketReads
from bridge.store.records import NotFound, _decode_map, _s

VIEWS = f"{keys.PREFIX}:views"  # hash id -> JSON {"owner", "version", "definition"}
VIEW_SEQ = f"{keys.PREFIX}:seq:view"
_REBUILD_BATCH = 500
# Rows read beyond a page, so that tickets of the cursor's millisecond rarely need a second
# read.
_TIE_SLACK = 8


def members_key(view_id: str, part: str) -> str:
    return f"{keys.PREFIX}:idx:view:{view_id}:p:{part}"


def _part_of_key(view_id: str) -> str:
    """Hash ticket id -> the part of the view that holds it (to leave it on a move)."""
    return f"{keys.PREFIX}:idx:view:{view_id}:of"


def _parts_key(view_id: str) -> str:
    return f"{keys.PREFIX}:idx:view:{view_id}:parts"


def part_of(view: View, ticket: Ticket) -> str:
    """A view's tickets are kept in parts by the ticket's agents' group (who may see them)
    and by the view's grouping value: "<group>/<value>" (names hold no "/")."""
    return f"{ticket.group}/{view.group_of(ticket)}"


def _in_scope(part: str, scope: frozenset[str] | None, group_value: str | None) -> bool:
    ticket_group, _, value = part.partition("/")
    return ((scope is None or ticket_group in scope)
            and (group_value is None or value == group_value))


class ViewStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def views(self) -> list[View]:
        raw = _decode_map(await self.redis.hgetall(VIEWS))
        return sorted((_view(k, v) for k, v in raw.items()), key=lambda v: int(v.id))

    async def get_view(self, view_id: str) -> View:
        raw = _s(await self.redis.hget(VIEWS, view_id))
        if not raw:
            raise NotFound(f"view {view_id} not found")
        return _view(view_id, raw)

    async def new_id(self) -> str:
        return str(await self.redis.incr(VIEW_SEQ))

    async def save_view(self, view: View, definition: dict[str, object]) -> None:
        await self.redis.hset(VIEWS, view.id, json.dumps(
            {"owner": view.owner, "version": view.version, "definition": definition}))

    async def delete_view(self, view_id: str) -> None:
        await self.redis.hdel(VIEWS, view_id)
        await self._drop_members(view_id)

    async def _parts(self, view_id: str) -> list[str]:
        return sorted(_s(p) for p in await self.redis.smembers(_parts_key(view_id)))

    async def _drop_members(self, view_id: str) -> None:
        parts = await self._parts(view_id)
        await self.redis.delete(_part_of_key(view_id), _parts_key(view_id),
                                *(members_key(view_id, p) for p in parts))

    async def refresh(self, tickets: Iterable[Ticket], views: Iterable[View]) -> None:
        """Bring the views' sets in line with the tickets as given (idempotent)."""
        tickets, views = list(tickets), list(views)
        if not tickets or not views:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for view in views:
                pipe.hmget(_part_of_key(view.id), [t.id for t in tickets])
            previous = [[_s(p) if p is not None else None for p in row]
                        for row in await pipe.execute()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for view, before in zip(views, previous, strict=True):
                for ticket, old in zip(tickets, before, strict=True):
                    part = part_of(view, ticket) if view.conditions.matches(ticket) else None
                    if old is not None and old != part:
                        pipe.zrem(members_key(view.id, old), ticket.id)
                        pipe.hdel(_part_of_key(view.id), ticket.id)
                    if part is not None:
                        pipe.zadd(members_key(view.id, part), {ticket.id: ticket.created_at_ms})
                        pipe.hset(_part_of_key(view.id), ticket.id, part)
                        pipe.sadd(_parts_key(view.id), part)
            await pipe.execute()

    async def rebuild(self, view: View, tickets: TicketReads) -> int:
        """The view's sets from every listed ticket (saving a view; `bridge views rebuild`)."""
        await self._drop_members(view.id)
        count, upper = 0, "+inf"
        while True:
            ids = [_s(i) for i in await self.redis.zrevrangebyscore(
                keys.index("all"), upper, "-inf", start=0, num=_REBUILD_BATCH)]
            if not ids:
                return count
            batch = await tickets.get_tickets(ids)
            await self.refresh(batch, [view])
            count += len(batch)
            upper = f"({ids[-1]}"

    async def counts(self, view: View, low_ms: float, high_ms: float,
                     scope: frozenset[str] | None) -> dict[str, int]:
        """Tickets per grouping value ("" for an ungrouped view) among the parts `scope`
        (the agents' groups a viewer sees; None: all) may see, in the aging range."""
        parts = [p for p in await self._parts(view.id) if _in_scope(p, scope, None)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                if low_ms == float("-inf") and high_ms == float("inf"):
                    pipe.zcard(members_key(view.id, part))
                else:
                    pipe.zcount(members_key(view.id, part), _bound(low_ms, exclusive=True),
                                _bound(high_ms))
            sizes = await pipe.execute()
        out: dict[str, int] = {}
        for part, size in zip(parts, sizes, strict=True):
            if size:
                value = part.partition("/")[2]
                out[value] = out.get(value, 0) + int(size)
        return out

    async def page(self, view: View, *, low_ms: float, high_ms: float,
                   scope: frozenset[str] | None, group: str | None,
                   cursor: tuple[int, str] | None, limit: int
                   ) -> tuple[list[str], tuple[int, str] | None]:
        """Ticket ids of one page and the cursor of the next ((ms, id) of the last one; None
        at the end): the first limit + 1 of each part in scope, merged. Tickets created in
        the same millisecond are ordered by id as Redis orders equal scores (bytewise)."""
        parts = [p for p in await self._parts(view.id) if _in_scope(p, scope, group)]
        descending = view.sort is Sort.CREATED_DESC
        want = limit + 1
        # One round trip for every part's first rows; a part that had to skip rows served
        # on an earlier page (tickets of the cursor's millisecond) is read on alone.
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                self._range(pipe, members_key(view.id, part), low_ms, high_ms, cursor, 0,
                            want + _TIE_SLACK, descending)
            replies = await pipe.execute()
        found: list[tuple[int, str]] = []
        for part, rows in zip(parts, replies, strict=True):
            kept = _after(rows, cursor, descending)
            if len(rows) == want + _TIE_SLACK and len(kept) < want:
                kept = await self._first(members_key(view.id, part), low_ms, high_ms, cursor,
                                         want, descending)
            found += kept[:want]
        found.sort(reverse=descending)
        more = len(found) > limit
        found = found[:limit]
        return [t for _, t in found], (found[-1] if more and found else None)

    @staticmethod
    def _range(client: Any, key: str, low_ms: float, high_ms: float,
               cursor: tuple[int, str] | None, offset: int, count: int,
               descending: bool) -> Any:
        """The range read of a part from the cursor's millisecond on (inclusive)."""
        if descending:
            top = _bound(high_ms if cursor is None else min(cursor[0], high_ms))
            return client.zrevrangebyscore(key, top, _bound(low_ms, exclusive=True),
                                           start=offset, num=count, withscores=True)
        bottom = (_bound(low_ms, exclusive=True) if cursor is None or cursor[0] <= low_ms
                  else str(cursor[0]))
        return client.zrangebyscore(key, bottom, _bound(high_ms), start=offset, num=count,
                                    withscores=True)

    async def _first(self, key: str, low_ms: float, high_ms: float,
                     cursor: tuple[int, str] | None, count: int, descending: bool
                     ) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        offset = 0
        while len(out) < count:
            want = count - len(out) + _TIE_SLACK
            rows = await self._range(self.redis, key, low_ms, high_ms, cursor, offset, want,
                                     descending)
            offset += len(rows)
            out += _after(rows, cursor, descending)
            if len(rows) < want:
                break
        return out[:count]


def _after(rows: list[tuple[bytes, float]], cursor: tuple[int, str] | None,
           descending: bool) -> list[tuple[int, str]]:
    """(ms, id) of the rows past the cursor: of the cursor's millisecond, those Redis
    orders after its ticket (equal scores go by member, bytewise)."""
    out = []
    for member, score in rows:
        tid, at = _s(member), int(score)
        if cursor is not None and at == cursor[0] and (
                tid >= cursor[1] if descending else tid <= cursor[1]):
            continue  # served on an earlier page
        out.append((at, tid))
    return out


def _bound(ms: float, *, exclusive: bool = False) -> str:
    if ms in (float("inf"), float("-inf")):
        return "+inf" if ms > 0 else "-inf"
    return f"({int(ms)}" if exclusive else str(int(ms))


def _view(view_id: str, raw: str) -> View:
    stored = json.loads(raw)
    return parse_view(view_id, stored["owner"], stored["definition"],
                      version=int(stored.get("version", 1)))
