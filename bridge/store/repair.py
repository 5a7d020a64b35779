"""Crash repair: a ticket whose opening was cut off between the routing script and the index
update is listed by the sweep (workers/sweeper.py), with the ticket it closed."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bridge.store import keys
from bridge.store.indexes import TicketIndexes
from bridge.store.records import _s

# Drop the members whose score is still at most ARGV[1] (a newer mark stays).
_FORGET_OLDER_SCRIPT = """
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""



class TicketRepair(TicketIndexes):
    def __init__(self, redis: Redis, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._forget_older = redis.register_script(_FORGET_OLDER_SCRIPT)

    async def contacts_opening(self, *, before_ms: int, limit: int = 1000) -> list[str]:
        """Contacts that opened a ticket before that moment and were not checked since,
        oldest first."""
        raw = await self.redis.zrangebyscore(keys.OPENING, "-inf", before_ms, start=0,
                                             num=limit)
        return [_s(cid) for cid in raw]

    async def list_if_unlisted(self, contact_ids: list[str]) -> list[str]:
        """Index each contact's current ticket and the one it follows up if the ticket list
        does not know the current one: its opening's index update never ran. That update
        also covers the previous ticket, listed long ago but closed by the opening (thread
        limit) and still filed under its old status. Returns the ids indexed now. Three
        round trips for the whole batch when nothing is missing."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in contact_ids:
                pipe.hget(keys.contact(cid), "cur")
            currents = [(cid, _s(cur)) for cid, cur in zip(contact_ids, await pipe.execute(),
                                                           strict=True) if cur]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, tid in currents:
                pipe.hget(keys.ticket(cid, tid), "follow_up_of")
            previous = [_s(p) for p in await pipe.execute()]
        tickets = [(cid, tid) for cid, tid in currents]
        tickets += [(cid, prev) for (cid, _), prev in zip(currents, previous, strict=True)
                    if prev]
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, tid in tickets:
                pipe.zscore(keys.index("all"), tid)
            scores = await pipe.execute()
        missing: dict[str, list[str]] = {}
        for (cid, tid), score in zip(tickets, scores, strict=True):
            if score is None:
                missing.setdefault(cid, []).append(tid)
        for (cid, current), prev in zip(currents, previous, strict=True):
            # The interrupted update was for both: the previous ticket is in the lists,
            # but maybe not under the status the opening gave it (closed).
            if prev and current in missing.get(cid, ()) and prev not in missing[cid]:
                missing[cid].append(prev)
        for cid, tids in missing.items():
            await self._reindex(cid, tids)
        return [tid for tids in missing.values() for tid in tids]

    async def forget_openings(self, contact_ids: list[str], *, checked_before_ms: int) -> int:
        """Drop the contacts' opening marks, unless one opened a ticket since."""
        if not contact_ids:
            return 0
        return int(await self._forget_older(keys=[keys.OPENING],
                                            args=[checked_before_ms, *contact_ids]))
