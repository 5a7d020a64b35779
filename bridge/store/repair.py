"""Crash repair: a ticket whose opening was cut off between the routing script and the index
update is listed by the sweep (workers/sweeper.py), with the ticket it closed."""

from __future__ import annotations

from bridge.store import keys
from bridge.store.indexes import TicketIndexes


class TicketRepair(TicketIndexes):
    async def index_if_unlisted(self, openings: list[tuple[str, str, str]]) -> list[str]:
        """For (contact id, opened ticket id, previous ticket id or "") from the change log:
        index each opened ticket the lists do not know (its opening's index update never
        ran), with the ticket it follows up, which that update also covered (listed long
        ago, but closed by the opening at the thread limit and still filed under its old
        status). Returns the ids indexed now. One round trip when nothing is missing."""
        if not openings:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, tid, _ in openings:
                pipe.zscore(keys.index("all"), tid)
            scores = await pipe.execute()
        missing: dict[str, list[str]] = {}
        for (cid, tid, prev), score in zip(openings, scores, strict=True):
            if score is None:
                missing.setdefault(cid, []).extend([tid, *filter(None, [prev])])
        for cid, tids in missing.items():
            await self._reindex(cid, list(dict.fromkeys(tids)))
        return [tid for tids in missing.values() for tid in dict.fromkeys(tids)]
