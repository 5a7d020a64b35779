"""The report counters in Redis (layout and meaning: bridge/core/report_counts.py).

- `bridge:{rpt}:<dim>:h:<epoch hour>` and `bridge:{rpt}:<dim>:d:<epoch day>`: strings of
  SLOTS big-endian signed 32-bit counters, moved with BITFIELD INCRBY (a dimension's hour
  and its day move together); a report reads whole days where the period covers them and
  hours at its edges.
- `bridge:{rpt}:<dim>:s:<epoch day>`: the day's 24 hours of scalar counters (no
  histograms), for the per-day series in any time zone.
- `bridge:{rpt}:dims`: every dimension ever counted (channels and agents).

The counters share one hash tag, so a report reads them with a few MGETs (one slot on a
Redis Cluster): per-command overhead, not data, is what a report's reads cost.
- `bridge:rpt:t:<ticket>`: what the consumer remembers of a ticket (figures_to_fields) and
  `log`, the last change applied: a change handed on again is skipped.
"""

from __future__ import annotations

import sys
from array import array
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain

from redis.asyncio import Redis

from bridge.core.report_counts import (
    SCALARS,
    SLOTS,
    Increment,
    TicketFigures,
    figures_from_fields,
    figures_to_fields,
)
from bridge.store.keys import PREFIX, index
from bridge.store.link import RedisLink
from bridge.store.pipelining import Arg, AutoPipeline
from bridge.store.records import _s, read_hashes
from bridge.store.transactions import transaction

HOUR_MS = 3_600_000
_TAG = f"{PREFIX}:{{rpt}}"
DIMS = f"{_TAG}:dims"
MGET_CHUNK = 1000
# Counters and ticket figures outlive any report period a viewer may ask for (366 days).
KEEP_S = 400 * 86400
_SWAP = sys.byteorder == "little"


def hour_key(dim: str, hour: int) -> str:
    return f"{_TAG}:{dim}:h:{hour}"


def day_key(dim: str, day: int) -> str:
    return f"{_TAG}:{dim}:d:{day}"


def series_key(dim: str, day: int) -> str:
    return f"{_TAG}:{dim}:s:{day}"


def ticket_key(ticket_id: str) -> str:
    return f"{PREFIX}:rpt:t:{ticket_id}"


def decode(blob: bytes | None, width: int = SLOTS) -> array[int]:
    """Counters from a stored string (shorter than the layout where the last slots were
    never written: those are zeros)."""
    values = array("i")
    values.frombytes((blob or b"").ljust(width * 4, b"\0")[:width * 4])
    if _SWAP:
        values.byteswap()
    return values


def _id_key(log_id: str) -> tuple[int, int]:
    ms, _, seq = log_id.partition("-")
    return int(ms or 0), int(seq or 0)


class ReportCounters:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._commands = AutoPipeline(redis)

    async def figures(self, ticket_ids: Sequence[str]) -> dict[str, tuple[TicketFigures, str]]:
        """Each ticket's figures and the id of the last change applied to it."""
        rows = await read_hashes(self._commands, [ticket_key(tid) for tid in ticket_ids])
        return {tid: (figures_from_fields(fields), fields.get("log", ""))
                for tid, fields in zip(ticket_ids, rows, strict=True)}

    @staticmethod
    def applied(last_log: str, log_id: str) -> bool:
        """Whether a change was applied already (changes of a ticket come in log order)."""
        return bool(last_log) and _id_key(log_id) <= _id_key(last_log)

    async def apply(self, updates: Sequence[tuple[str, TicketFigures, str, list[Increment]]]
                    ) -> None:
        """For each (ticket, its new figures, the change applied, increments): move the
        counters and save the figures in one transaction, so a change is counted once
        or not at all. The batch's increments are summed per counter first: a batch of
        new tickets moves the same few hour and day counters, once each."""
        if not updates:
            return
        moves: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        dims: set[str] = set()
        for _, _, _, increments in updates:
            for inc in increments:
                hour = inc.at_ms // HOUR_MS
                moves[hour_key(inc.dim, hour)][inc.slot] += inc.delta
                moves[day_key(inc.dim, hour // 24)][inc.slot] += inc.delta
                if inc.slot < SCALARS:
                    moves[series_key(inc.dim, hour // 24)][
                        (hour % 24) * SCALARS + inc.slot] += inc.delta
                dims.add(inc.dim)
        commands: list[tuple[Arg, ...]] = []
        if dims:
            commands.append(("SADD", DIMS, *sorted(dims)))
        for key, by_slot in moves.items():
            args: list[Arg] = []
            for slot, delta in by_slot.items():
                if delta:
                    args += ["INCRBY", "i32", f"#{slot}", delta]
            if args:
                commands += [("BITFIELD", key, *args), ("EXPIRE", key, KEEP_S)]
        for ticket_id, figures, log_id, _ in updates:
            fields = {**figures_to_fields(figures), "log": log_id}
            commands += [("HSET", ticket_key(ticket_id), *chain.from_iterable(fields.items())),
                         ("EXPIRE", ticket_key(ticket_id), KEEP_S)]
        # Never sent twice (see transactions.py): a lost reply makes the relay hand the
        # batch on again, and the figures' `log` then skips what this EXEC did.
        await transaction(RedisLink.of(self.redis), commands)

    async def dims(self) -> list[str]:
        return sorted(_s(d) for d in await self.redis.smembers(DIMS))

    async def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for start in range(0, len(keys), MGET_CHUNK):
            out += await self.redis.mget(keys[start:start + MGET_CHUNK])
        return out

    async def totals(self, dims: Sequence[str], *, hours: Sequence[int], days: Sequence[int]
                     ) -> dict[str, list[array[int]]]:
        """Each dimension's counter rows over those hours and days."""
        keys = [key for dim in dims for key in (*(hour_key(dim, h) for h in hours),
                                                 *(day_key(dim, d) for d in days))]
        blobs = await self._mget(keys)
        width = len(hours) + len(days)
        return {dim: [decode(b) for b in blobs[i * width:(i + 1) * width]]
                for i, dim in enumerate(dims)}

    async def hourly_scalars(self, dims: Sequence[str], hours: Sequence[int]
                             ) -> dict[str, list[array[int]]]:
        """The scalar counters of each hour (not the histograms) per dimension."""
        if not hours:
            return {dim: [] for dim in dims}
        first_day, last_day = hours[0] // 24, hours[-1] // 24
        days = range(first_day, last_day + 1)
        blobs = await self._mget([series_key(dim, d) for dim in dims for d in days])
        out = {}
        for i, dim in enumerate(dims):
            per_hour = array("i")
            for blob in blobs[i * len(days):(i + 1) * len(days)]:
                per_hour += decode(blob, 24 * SCALARS)
            base = first_day * 24
            out[dim] = [per_hour[(h - base) * SCALARS:(h - base + 1) * SCALARS] for h in hours]
        return out

    async def unsolved_by_status(self) -> dict[str, int]:
        """Tickets in each unsolved status now (the list indexes' sizes)."""
        return await self.by_status(("new", "open", "pending", "hold"))

    async def by_status(self, statuses: Sequence[str]) -> dict[str, int]:
        """Tickets in each of these statuses now (the list indexes' sizes)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in statuses:
                pipe.zcard(index("status", status))
            sizes = await pipe.execute()
        return {s: int(n) for s, n in zip(statuses, sizes, strict=True)}
