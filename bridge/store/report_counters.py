"""The report counters in Redis (layout and meaning: bridge/core/report_counts.py).

- `bridge:rpt:<dim>:h:<epoch hour>` and `bridge:rpt:<dim>:d:<epoch day>`: strings of
  SLOTS big-endian signed 32-bit counters, moved with BITFIELD INCRBY (a dimension's hour
  and its day move together); a report reads whole days where the period covers them,
  hours at its edges, and the scalar prefix (GETRANGE) of each hour for its per-day series.
- `bridge:rpt:dims`: every dimension ever counted (channels and agents).
- `bridge:rpt:t:<ticket>`: what the consumer remembers of a ticket (figures_to_fields) and
  `log`, the last change applied: a change handed on again is skipped.
"""

from __future__ import annotations

import sys
from array import array
from collections import defaultdict
from collections.abc import Sequence

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
from bridge.store.records import _decode_map, _s

HOUR_MS = 3_600_000
DIMS = f"{PREFIX}:rpt:dims"
# Counters and ticket figures outlive any report period a viewer may ask for (366 days).
KEEP_S = 400 * 86400
_SWAP = sys.byteorder == "little"


def hour_key(dim: str, hour: int) -> str:
    return f"{PREFIX}:rpt:{dim}:h:{hour}"


def day_key(dim: str, day: int) -> str:
    return f"{PREFIX}:rpt:{dim}:d:{day}"


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

    async def figures(self, ticket_ids: Sequence[str]) -> dict[str, tuple[TicketFigures, str]]:
        """Each ticket's figures and the id of the last change applied to it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in ticket_ids:
                pipe.hgetall(ticket_key(tid))
            rows = await pipe.execute()
        out = {}
        for tid, raw in zip(ticket_ids, rows, strict=True):
            fields = _decode_map(raw)
            out[tid] = (figures_from_fields(fields), fields.get("log", ""))
        return out

    @staticmethod
    def applied(last_log: str, log_id: str) -> bool:
        """Whether a change was applied already (changes of a ticket come in log order)."""
        return bool(last_log) and _id_key(log_id) <= _id_key(last_log)

    async def apply(self, updates: Sequence[tuple[str, TicketFigures, str, list[Increment]]]
                    ) -> None:
        """For each (ticket, its new figures, the change applied, increments): move the
        counters and save the figures in one transaction, so a change is counted once
        or not at all."""
        if not updates:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for ticket_id, figures, log_id, increments in updates:
                by_key: dict[str, list[Increment]] = defaultdict(list)
                for inc in increments:
                    hour = inc.at_ms // HOUR_MS
                    by_key[hour_key(inc.dim, hour)].append(inc)
                    by_key[day_key(inc.dim, hour // 24)].append(inc)
                    pipe.sadd(DIMS, inc.dim)
                for key, incs in by_key.items():
                    args: list[str | int] = []
                    for inc in incs:
                        args += ["INCRBY", "i32", f"#{inc.slot}", inc.delta]
                    pipe.execute_command("BITFIELD", key, *args)
                    pipe.expire(key, KEEP_S)
                pipe.hset(ticket_key(ticket_id), mapping={**figures_to_fields(figures),
                                                          "log": log_id})
                pipe.expire(ticket_key(ticket_id), KEEP_S)
            await pipe.execute()

    async def dims(self) -> list[str]:
        return sorted(_s(d) for d in await self.redis.smembers(DIMS))

    async def totals(self, dims: Sequence[str], *, hours: Sequence[int], days: Sequence[int]
                     ) -> dict[str, list[array[int]]]:
        """Each dimension's counter rows over those hours and days (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for dim in dims:
                for h in hours:
                    pipe.get(hour_key(dim, h))
                for d in days:
                    pipe.get(day_key(dim, d))
            blobs = await pipe.execute()
        width = len(hours) + len(days)
        return {dim: [decode(b) for b in blobs[i * width:(i + 1) * width]]
                for i, dim in enumerate(dims)}

    async def hourly_scalars(self, dims: Sequence[str], hours: Sequence[int]
                             ) -> dict[str, list[array[int]]]:
        """The scalar counters of each hour (not the histograms) per dimension."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for dim in dims:
                for h in hours:
                    pipe.getrange(hour_key(dim, h), 0, SCALARS * 4 - 1)
            blobs = await pipe.execute()
        n = len(hours)
        return {dim: [decode(b, SCALARS) for b in blobs[i * n:(i + 1) * n]]
                for i, dim in enumerate(dims)}

    async def unsolved_by_status(self) -> dict[str, int]:
        """Tickets in each unsolved status now (the list indexes' sizes)."""
        statuses = ("new", "open", "pending", "hold")
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in statuses:
                pipe.zcard(index("status", status))
            sizes = await pipe.execute()
        return {s: int(n) for s, n in zip(statuses, sizes, strict=True)}
