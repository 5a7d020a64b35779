"""Per-endpoint outboxes of webhook deliveries, in Redis (every key under the endpoint's hash
tag, so its scripts run on one Redis Cluster slot).

    out              stream: deliveries in change-log order, appended by the change-log
                     consumer (workers/export_consumer.py), kept RETENTION_S for replays
    pos              the sender's watermark: every entry up to it is settled (delivered,
                     or parked behind a failed delivery of its ticket)
    held:<ticket>    list: a ticket's failed delivery and the ones after it, in order
    due              zset: held ticket -> when its first held delivery is tried again
    attempts         hash: held ticket -> failed attempts of its first held delivery
    parked           hash: held ticket -> the last entry parked (a re-read entry, after a
                     crash before the watermark was saved, is not parked twice)
    failed           stream: deliveries that used up their attempts (replayable)
    health           hash: counters and the last answer

Order per ticket: a ticket with a failed delivery is held; its later deliveries queue behind
it instead of overtaking it, while other tickets' deliveries go on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.store.export_endpoints import endpoint_tag
from bridge.store.records import _decode_map, _s
from bridge.store.scripts import Script

RETENTION_S = 7 * 24 * 3600
FAILED_MAX = 10_000
START = "0-0"

_PARK = """
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last then
  local lm, ls = string.match(last, '(%d+)-(%d+)')
  local em, es = string.match(ARGV[2], '(%d+)-(%d+)')
  lm, ls, em, es = tonumber(lm), tonumber(ls), tonumber(em), tonumber(es)
  if em < lm or (em == lm and es <= ls) then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
end
return 1
"""

_SETTLE_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'item', ARGV[2], 'error', ARGV[4],
             'attempts', ARGV[5], 'at_ms', ARGV[3])
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class OutboxItem:
    """One delivery: the entry it came from, its webhook-id, ticket, type and JSON body."""

    entry_id: str
    webhook_id: str
    ticket_id: str
    type: str
    body: str
    created_ms: int

    @property
    def queued_ms(self) -> int:
        """When it entered the outbox (its entry id: Redis's clock); a replay is queued anew."""
        return int(self.entry_id.split("-", 1)[0])

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> OutboxItem:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class NewDelivery:
    """What the change-log consumer appends to one endpoint's outbox."""

    endpoint_id: str
    webhook_id: str
    ticket_id: str
    type: str
    body: str
    created_ms: int


@dataclass(frozen=True)
class Health:
    delivered: int
    failed_attempts: int
    given_up: int
    consecutive_failures: int
    last_success_ms: int
    last_failure_ms: int
    last_status: int | None
    last_error: str
    backlog: int  # entries not yet settled (counted up to BACKLOG_CAP)
    retrying_tickets: int
    failed: int  # deliveries that used up their attempts


BACKLOG_CAP = 10_000
# Entries a backlog count asks Redis for at a time. Each comes with its body: one read of
# 10,000 (~10 MB) kept Redis from every other client, webhooks included, while it built
# the reply (worst PING of a second client beside it: 14-34 ms).
BACKLOG_READ_CHUNK = 100


def _key(endpoint_id: str, name: str) -> str:
    return f"{endpoint_tag(endpoint_id)}:{name}"


# Marks an entry a replay appended (a copy of an earlier one).
COPY_FIELD = b"copy"


def _item(entry_id: Any, fields: dict[Any, Any]) -> OutboxItem:
    f = _decode_map(fields)
    return OutboxItem(entry_id=_s(entry_id), webhook_id=f["id"], ticket_id=f["t"],
                      type=f["type"], body=f["body"], created_ms=int(f["ms"]))


async def append(redis: Redis, deliveries: Iterable[NewDelivery]) -> int:
    """Append deliveries to their endpoints' outboxes, in the given order, one round trip."""
    count = 0
    async with redis.pipeline(transaction=False) as pipe:
        for d in deliveries:
            pipe.xadd(_key(d.endpoint_id, "out"), {"id": d.webhook_id, "t": d.ticket_id,
                                                   "type": d.type, "body": d.body,
                                                   "ms": str(d.created_ms)})
            count += 1
        if count:
            await pipe.execute()
    return count


class Outbox:
    """One endpoint's outbox, as the sender and the admin API see it."""

    def __init__(self, redis: Redis, endpoint_id: str) -> None:
        self.redis = redis
        self.endpoint_id = endpoint_id
        self._park = Script(redis, _PARK)
        self._settle = Script(redis, _SETTLE_HEAD)
        self.out, self.pos, self.due = (_key(endpoint_id, n) for n in ("out", "pos", "due"))
        self.attempts, self.parked = _key(endpoint_id, "attempts"), _key(endpoint_id, "parked")
        self.failed_key, self.health_key = _key(endpoint_id, "failed"), _key(endpoint_id,
                                                                             "health")

    def held(self, ticket_id: str) -> str:
        return _key(self.endpoint_id, f"held:{ticket_id}")

    # ---------------------------------------------------------------- new deliveries

    async def position(self) -> str:
        return _s(await self.redis.get(self.pos)) or START

    async def save_position(self, entry_id: str) -> None:
        await self.redis.set(self.pos, entry_id)

    async def read(self, after: str, *, count: int, block_ms: int | None) -> list[OutboxItem]:
        """Entries after a position; waits up to block_ms for one when there is none."""
        raw = await self.redis.xread({self.out: after}, count=count, block=block_ms)
        return [_item(eid, f) for _, entries in raw or [] for eid, f in entries]

    async def held_tickets(self) -> set[str]:
        return {_s(t) for t in await self.redis.zrange(self.due, 0, -1)}

    async def park(self, item: OutboxItem, *, due_ms: int | None = None,
                   attempts: int = 0) -> bool:
        """Queue a delivery behind its ticket's held ones; with due_ms, hold the ticket (its
        first failure) until then. False: this entry was parked before."""
        return bool(await self._park(
            keys=[self.held(item.ticket_id), self.parked, self.due, self.attempts],
            args=[item.ticket_id, item.entry_id, item.to_json(),
                  "" if due_ms is None else str(due_ms), str(attempts)]))

    # ---------------------------------------------------------------- held tickets

    async def due_tickets(self, now_ms: int, *, count: int) -> list[str]:
        return [_s(t) for t in await self.redis.zrangebyscore(self.due, "-inf", now_ms,
                                                              start=0, num=count)]

    async def next_due_ms(self) -> int | None:
        first = await self.redis.zrange(self.due, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def head(self, ticket_id: str) -> tuple[OutboxItem, int] | None:
        """A held ticket's first delivery and its failed attempts so far."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lindex(self.held(ticket_id), 0)
            pipe.hget(self.attempts, ticket_id)
            raw, attempts = await pipe.execute()
        if raw is None:
            return None
        return OutboxItem.from_json(_s(raw)), int(_s(attempts) or 0)

    async def settle_head(self, item: OutboxItem, *, now_ms: int, gave_up_error: str = "",
                          attempts: int = 0) -> bool:
        """The held ticket's first delivery is done: delivered, or (gave_up_error) moved to
        the failed deliveries. The next one is due at once; the ticket is released when
        none is left."""
        return bool(await self._settle(
            keys=[self.held(item.ticket_id), self.parked, self.due, self.attempts,
                  self.failed_key],
            args=[item.ticket_id, item.to_json(), str(now_ms), gave_up_error, str(attempts),
                  str(FAILED_MAX)]))

    async def reschedule(self, ticket_id: str, *, due_ms: int, attempts: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.due, {ticket_id: due_ms}, xx=True)
            pipe.hset(self.attempts, ticket_id, str(attempts))
            await pipe.execute()

    # ---------------------------------------------------------------- health

    async def record(self, *, delivered: int = 0, failed_attempts: int = 0, given_up: int = 0,
                     last_status: int | None = None, last_error: str = "",
                     now_ms: int) -> None:
        """Count a round of attempts; the last answer names the endpoint's state."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, value in (("delivered", delivered), ("failed_attempts", failed_attempts),
                                ("given_up", given_up)):
                if value:
                    pipe.hincrby(self.health_key, name, value)
            fields: dict[str, str] = {"last_status": "" if last_status is None
                                      else str(last_status)}
            if failed_attempts:
                pipe.hincrby(self.health_key, "consecutive_failures", failed_attempts)
                fields.update(last_failure_ms=str(now_ms), last_error=last_error[:300])
            elif delivered:
                fields.update(consecutive_failures="0", last_success_ms=str(now_ms))
            pipe.hset(self.health_key, mapping=fields)
            await pipe.execute()

    async def health(self) -> Health:
        position = await self.position()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.health_key)
            pipe.zcard(self.due)
            pipe.xlen(self.failed_key)
            raw, held, failed = await pipe.execute()
        backlog = await self._count_after(position)
        h = _decode_map(raw)
        return Health(
            delivered=int(h.get("delivered") or 0),
            failed_attempts=int(h.get("failed_attempts") or 0),
            given_up=int(h.get("given_up") or 0),
            consecutive_failures=int(h.get("consecutive_failures") or 0),
            last_success_ms=int(h.get("last_success_ms") or 0),
            last_failure_ms=int(h.get("last_failure_ms") or 0),
            last_status=int(h["last_status"]) if h.get("last_status") else None,
            last_error=h.get("last_error", ""), backlog=backlog, retrying_tickets=held,
            failed=failed)

    async def _count_after(self, position: str) -> int:
        """Entries after `position`, up to BACKLOG_CAP, BACKLOG_READ_CHUNK a read."""
        after = "-" if position == START else f"({position}"
        counted = 0
        async for entries in self._chunks(after, "+", BACKLOG_READ_CHUNK, limit=BACKLOG_CAP):
            counted += len(entries)
        return counted

    async def _chunks(self, start: str, end: str, chunk: int, *, limit: int | None = None
                      ) -> AsyncIterator[list[Any]]:
        """The outbox's entries from start to end (XRANGE bounds), `chunk` a read and at
        most `limit` in all: Redis serves other clients between the reads."""
        read = 0
        while limit is None or read < limit:
            count = chunk if limit is None else min(chunk, limit - read)
            entries = await self.redis.xrange(self.out, start, end, count=count)
            if entries:
                yield entries
            if len(entries) < count:
                return
            read += count
            start = f"({_s(entries[-1][0])}"

    # ---------------------------------------------------------------- failed and replays

    async def failed(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The deliveries that used up their attempts, newest first."""
        raw = await self.redis.xrevrange(self.failed_key, "+", "-", count=limit)
        out = []
        for failed_id, fields in raw:
            f = _decode_map(fields)
            item = OutboxItem.from_json(f["item"])
            out.append({"failed_id": _s(failed_id), "item": item, "error": f.get("error", ""),
                        "attempts": int(f.get("attempts") or 0),
                        "failed_at_ms": int(f.get("at_ms") or 0)})
        return out

    async def replay_failed(self, webhook_id: str) -> int:
        """Deliver a failed delivery again (same webhook-id, at the end of the outbox)."""
        found = [f for f in await self.failed(limit=FAILED_MAX)
                 if f["item"].webhook_id == webhook_id]
        async with self.redis.pipeline(transaction=True) as pipe:
            for f in reversed(found):  # oldest first
                self._copy(pipe, f["item"])
                pipe.xdel(self.failed_key, f["failed_id"])
            await pipe.execute()
        return len(found)

    async def replay_since(self, since_ms: int, *, chunk: int = 1000) -> int:
        """Deliver again everything appended since then (still within RETENTION_S), in its
        order, with the same webhook-ids; receivers that dedupe by id ignore what they had.
        Earlier replays' copies are not copied again: each replay of the same period sent
        the period's events once more for every replay before it."""
        last = await self.redis.xrevrange(self.out, "+", "-", count=1)
        if not last:
            return 0
        end = _s(last[0][0])
        copied = 0
        async for entries in self._chunks(f"{since_ms}-0", end, chunk):
            originals = [(eid, fields) for eid, fields in entries if COPY_FIELD not in fields]
            if originals:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for eid, fields in originals:
                        self._copy(pipe, _item(eid, fields))
                    await pipe.execute()
            copied += len(originals)
        return copied

    def _copy(self, pipe: Any, item: OutboxItem) -> None:
        pipe.xadd(self.out, {"id": item.webhook_id, "t": item.ticket_id, "type": item.type,
                             "body": item.body, "ms": str(item.created_ms), COPY_FIELD: "1"})

    async def trim(self, *, now_ms: int) -> None:
        """Drop entries older than RETENTION_S that the sender has settled."""
        position = await self.position()
        oldest_kept = now_ms - RETENTION_S * 1000
        if position == START:
            return
        pos_ms = int(position.split("-", 1)[0])
        minid = position if pos_ms < oldest_kept else f"{oldest_kept}-0"
        await self.redis.xtrim(self.out, minid=minid, approximate=True)
