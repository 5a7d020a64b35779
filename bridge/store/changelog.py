"""The change log: one Redis stream per partition of contacts (keys.change_log), written by
the routing script and the ticket store in the transaction of each change, read by the
relay (workers/relay.py).

Each consumer (the RQ triggers today; the widget fan-out and webhook export later) keeps
its own position per partition in one hash, so a restarted relay continues where the last
one stopped; an entry is handed on at least once (a relay that dies after handing a batch
on but before saving the position hands it on again), in stream order, so in order per
ticket. One relay feeds a consumer at a time, under that consumer's lease; others wait to
take over.

Web processes also tail the log (bridge/web/live.py) for real-time pages, from "now" and
without positions: they carry no state that must survive them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis

from bridge.core.changes import Change
from bridge.store import keys
from bridge.store.scripts import Script

START = "0-0"
# The consumers the relay process feeds (workers/relay.py: consumers_for), each with its own
# positions and lease. "jobs": the trigger and fallback jobs handed to RQ.
RELAY_CONSUMER = "jobs"
# The sweep's index repair (workers/sweeper.py): it reads the openings a grace period late,
# so the log keeps at least that much; trimming follows the slowest consumer.
REPAIR_CONSUMER = "repair"
# The report counters (workers/report_counters.py).
REPORTS_CONSUMER = "reports"
# The webhook export (workers/export_consumer.py): changes into per-endpoint outboxes.
EXPORT_CONSUMER = "export"
# Every consumer with saved positions: trimming keeps what the slowest has not handed on.
# A consumer listed here must run (the relay process runs them all), or the log grows.
# Capacity, automatic assignment and saved views (workers/teams.py).
TEAMS_CONSUMER = "teams"
CONSUMERS = (RELAY_CONSUMER, REPAIR_CONSUMER, EXPORT_CONSUMER, REPORTS_CONSUMER,
             TEAMS_CONSUMER)
# Redis runs one command at a time, and a reply of many entries keeps every webhook
# waiting while it is built. Readers of many partitions therefore ask for little at a time:
# a read of the tail (XREAD, whose COUNT is per stream) at most READ_PER_PARTITION entries
# of each (4,096 in all), and a range read (XRANGE, the sweep and the lag) at most
# PARTITIONS_PER_ROUND_TRIP partitions a round trip. Measured with a second client's PING
# beside a 50,000-entry backlog: an XREAD of up to 500 per stream kept it waiting 41.5 ms
# (3.7 ms at 16); one pipeline over the 256 partitions, 1000 entries each, 44 ms (3.8 ms
# with 16 partitions of 50 a round trip).
READ_PER_PARTITION = 16
PARTITIONS_PER_ROUND_TRIP = 16
# Lag is counted up to this many entries per partition (a /metrics scrape, or the
# operations page, which shows the sweep's consumer a grace period behind on purpose).
LAG_COUNT_CAP = 100

# Positions only move forward. A relay paused past its lease (a stopped process, a long GC)
# finishes the batch it held once it runs again, after the new holder went further: its
# save put the positions back, the log's lag stayed (and grew) until new traffic reached
# those partitions, and trimming kept entries for it. Stream ids compare as (ms, seq).
_ADVANCE_SCRIPT = """
local n = #ARGV / 2
local fields = {}
for i = 1, n do fields[i] = ARGV[2 * i - 1] end
local current = redis.call('HMGET', KEYS[1], unpack(fields))
local out = {}
for i = 1, n do
  local new, cur = ARGV[2 * i], current[i]
  local ahead = not cur
  if cur then
    local nms, nseq = string.match(new, '^(%d+)-(%d+)$')
    local cms, cseq = string.match(cur, '^(%d+)-(%d+)$')
    nms, nseq, cms, cseq = tonumber(nms), tonumber(nseq), tonumber(cms), tonumber(cseq)
    ahead = (not cms) or nms > cms or (nms == cms and nseq > cseq)
  end
  if ahead then
    out[#out + 1] = fields[i]
    out[#out + 1] = new
  end
end
if #out > 0 then redis.call('HSET', KEYS[1], unpack(out)) end
return #out / 2
"""

# Renews the lease only for its holder (a paused relay whose lease expired and was taken
# must not extend the new holder's).
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _change(log_id: str, flat: list[Any]) -> Change:
    """An entry as Redis sends it: its fields and values in one flat list (ValueError, as
    UnicodeDecodeError is, when it cannot be parsed)."""
    pairs = iter([_s(value) for value in flat or ()])
    return Change.from_fields(log_id, dict(zip(pairs, pairs, strict=True)))


def _unparsed(response: Any, **options: Any) -> Any:
    """The reply as Redis sent it: stream entries as [id, [field, value, ...]] lists.
    redis-py's own callbacks build a dict of bytes per entry, which was then rebuilt
    decoded; the relay parses every change the bridge writes."""
    return response


def _batch(per_partition: Iterable[tuple[int, list[Any]]]) -> Batch:
    """Parse stream entries read per partition; the positions reached are the last ids."""
    changes: list[Change] = []
    partitions: list[int] = []
    reached: dict[int, str] = {}
    unreadable = 0
    for partition, entries in per_partition:
        for entry_id, flat in entries:
            log_id = reached[partition] = _s(entry_id)
            try:
                changes.append(_change(log_id, flat))
            except ValueError:
                unreadable += 1
            else:
                partitions.append(partition)
    return Batch(changes, reached, unreadable, partitions)


def _after(position: str) -> str:
    """XRANGE's start just after a position (exclusive), or the whole stream."""
    return "-" if position == START else f"({position}"


def _id_key(log_id: str) -> tuple[int, int]:
    ms, _, seq = log_id.partition("-")
    return int(ms), int(seq or 0)


def positions_ahead(read_from: dict[int, str], positions: dict[int, str]
                    ) -> dict[int, tuple[int, int]] | None:
    """The partitions in which `positions` are past `read_from`, with their positions as
    comparable keys; None when `positions` are behind `read_from` in some partition (a
    read from `read_from` lacks entries a consumer standing there needs)."""
    ahead: dict[int, tuple[int, int]] = {}
    for partition, position in positions.items():
        start = read_from.get(partition, START)
        if position != start:
            key = _id_key(position)
            if key < _id_key(start):
                return None
            ahead[partition] = key
    return ahead


@dataclass(frozen=True)
class Lag:
    """How far a consumer is behind the writers: entries not yet handed on, and the age of
    the oldest of them (0 when there is none)."""

    events: int
    oldest_s: float


@dataclass(frozen=True)
class Batch:
    """Entries read from the log, in order within each partition, and the positions the
    consumer reaches once it has handed them on."""

    changes: list[Change]
    positions: dict[int, str]
    unreadable: int = 0  # entries skipped because they could not be parsed
    partitions: list[int] = field(default_factory=list)  # each change's partition
    # Some partition gave as many entries as were asked for: more may be waiting there.
    full: bool = False

    def beyond(self, read_from: dict[int, str], positions: dict[int, str]) -> Batch | None:
        """What of this batch (read after `read_from`) a consumer standing at `positions`
        has not handed on yet; None when that consumer is behind `read_from` in some
        partition (the batch lacks entries it needs)."""
        ahead = positions_ahead(read_from, positions)
        return None if ahead is None else self.past(ahead)

    def past(self, ahead: dict[int, tuple[int, int]]) -> Batch:
        """This batch without what lies at or before `ahead` (positions_ahead's answer)."""
        if not ahead:
            return self
        kept = [(change, p) for change, p in zip(self.changes, self.partitions, strict=True)
                if p not in ahead or _id_key(change.log_id) > ahead[p]]
        reached = {p: pos for p, pos in self.positions.items()
                   if p not in ahead or _id_key(pos) > ahead[p]}
        return Batch([c for c, _ in kept], reached, 0, [p for _, p in kept], self.full)


class ChangeLog:
    def __init__(self, redis: Redis, *, partitions: int = keys.PARTITIONS) -> None:
        self.redis = redis
        self.partitions = range(partitions)
        # A read names every partition's stream: built once, not on each of the many reads
        # a second a tailing reader makes.
        self._streams = [keys.change_log(p) for p in self.partitions]
        self._partition_of_stream = {stream: p for p, stream in enumerate(self._streams)}
        # Entries are read on a client of the same pool that leaves XREAD's and XRANGE's
        # replies as Redis sent them (_unparsed).
        self._entries = Redis(connection_pool=redis.connection_pool)
        for command in ("XREAD", "XRANGE"):
            self._entries.set_response_callback(command, _unparsed)
        self._renew = Script(redis, _RENEW_SCRIPT)
        self._advance = Script(redis, _ADVANCE_SCRIPT)
        self._release = Script(redis, _RELEASE_SCRIPT)

    # ---------------------------------------------------------------- positions

    async def positions(self, consumer: str) -> dict[int, str]:
        return (await self._all_positions((consumer,)))[consumer]

    async def _all_positions(self, consumers: Iterable[str]) -> dict[str, dict[int, str]]:
        """Each consumer's position per partition (START where it has none), one read."""
        saved = {_s(k): _s(v) for k, v in (await self.redis.hgetall(keys.RELAY_POSITIONS)
                                           ).items()}
        return {c: {p: saved.get(f"{c}:{p}", START) for p in self.partitions}
                for c in consumers}

    async def save_positions(self, consumer: str, positions: dict[int, str]) -> None:
        """Save where the consumer got to; a position behind the saved one is left as it
        was (_ADVANCE_SCRIPT)."""
        if positions:
            await self._advance(keys=[keys.RELAY_POSITIONS], args=[
                value for p, pos in positions.items() for value in (f"{consumer}:{p}", pos)])

    # ---------------------------------------------------------------- reading

    async def tail_positions(self) -> dict[int, str]:
        """Each partition's newest entry id (START when it has none): reading after these
        positions gets only what is written from now on, with nothing skipped in between
        (XREAD's "$" would skip what a partition gets between two reads)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in self.partitions:
                pipe.xrevrange(keys.change_log(p), "+", "-", count=1)
            replies: list[Any] = await pipe.execute()
        return {p: _s(newest[0][0]) if newest else START
                for p, newest in zip(self.partitions, replies, strict=True)}

    async def read(self, positions: dict[int, str], *, count: int, block_ms: int | None
                   ) -> Batch:
        """Up to `count` entries per partition after the positions; waits up to block_ms
        for the first one when there is none (None: do not wait)."""
        names = self._streams
        streams = {names[p]: pos for p, pos in positions.items()}
        raw = await self._entries.xread(streams, count=count, block=block_ms)
        partition_of = self._partition_of_stream
        # RESP2 answers [[stream, entries], ...], RESP3 a map; no entries: nil (None).
        per_stream = list(raw.items() if isinstance(raw, dict) else raw or [])
        batch = _batch((partition_of[_s(stream)], entries) for stream, entries in per_stream)
        return replace(batch, full=any(len(entries) >= count for _, entries in per_stream))

    async def read_until(self, positions: dict[int, str], *, until_ms: int, count: int
                         ) -> Batch:
        """Up to `count` entries per partition after the positions and written before
        until_ms (a consumer that must stay a grace period behind the writers)."""
        replies = await self._ranges(positions, str(until_ms - 1), count)
        return _batch(zip(positions, replies, strict=True))

    async def _ranges(self, positions: dict[int, str], end: str, count: int) -> list[Any]:
        """XRANGE of each partition after its position, PARTITIONS_PER_ROUND_TRIP
        partitions a round trip: Redis serves other clients between them."""
        items = list(positions.items())
        replies: list[Any] = []
        for start in range(0, len(items), PARTITIONS_PER_ROUND_TRIP):
            async with self._entries.pipeline(transaction=False) as pipe:
                for p, pos in items[start:start + PARTITIONS_PER_ROUND_TRIP]:
                    pipe.xrange(keys.change_log(p), _after(pos), end, count=count)
                replies += await pipe.execute()
        return replies

    async def trim(self) -> None:
        """Drop what every consumer has handed on (entries before the slowest position)."""
        every = (await self._all_positions(CONSUMERS)).values()
        slowest = {p: min((positions[p] for positions in every), key=_id_key)
                   for p in self.partitions}
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition, pos in slowest.items():
                if pos != START:
                    pipe.xtrim(keys.change_log(partition), minid=pos)
            await pipe.execute()

    async def lag(self, consumer: str, *, now_ms: int | None = None) -> Lag:
        """Entries after the consumer's positions (counted up to LAG_COUNT_CAP per
        partition) and the age of the oldest of them."""
        positions = await self.positions(consumer)
        replies = await self._ranges({p: positions[p] for p in self.partitions}, "+",
                                     LAG_COUNT_CAP)
        events = 0
        oldest_ms: int | None = None
        for pending in replies:
            if not pending:
                continue
            events += len(pending)
            pending_ms = _id_key(_s(pending[0][0]))[0]
            oldest_ms = pending_ms if oldest_ms is None else min(oldest_ms, pending_ms)
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return Lag(events, max(0.0, (now - oldest_ms) / 1000) if oldest_ms else 0.0)

    async def entries(self, partition: int) -> list[Change]:
        """Every entry of one partition still in the log (tests, inspection)."""
        raw = await self._entries.xrange(keys.change_log(partition))
        return [_change(_s(entry_id), flat) for entry_id, flat in raw]

    async def all_entries(self) -> list[Change]:
        out: list[Change] = []
        for p in self.partitions:
            out += await self.entries(p)
        return out

    # ---------------------------------------------------------------- the relay's lease

    async def acquire_lease(self, token: str, *, ttl_ms: int,
                            consumer: str = RELAY_CONSUMER) -> bool:
        lease = keys.relay_lease(consumer)
        if await self.redis.set(lease, token, nx=True, px=ttl_ms):
            return True
        held = await self.redis.get(lease)
        return held is not None and _s(held) == token and await self.renew_lease(
            token, ttl_ms=ttl_ms, consumer=consumer)

    async def renew_lease(self, token: str, *, ttl_ms: int,
                          consumer: str = RELAY_CONSUMER) -> bool:
        return bool(await self._renew(keys=[keys.relay_lease(consumer)],
                                      args=[token, ttl_ms]))

    async def release_lease(self, token: str, *, consumer: str = RELAY_CONSUMER) -> None:
        await self._release(keys=[keys.relay_lease(consumer)], args=[token])

    async def lease_held(self, consumer: str = RELAY_CONSUMER) -> bool:
        return bool(await self.redis.exists(keys.relay_lease(consumer)))

