"""People, groups, API tokens, admin-defined ticket fields, and the round-robin state of
automatic assignment, in Redis.

Every key carries the hash tag {team}, so the round-robin script (pick an available agent
of a group under capacity, count the ticket against them, rotate) is one atomic step that
also runs on Redis Cluster. An agent's load is the set of the tickets they hold as active
conversations (assigned, unsolved, session active): a set, so that recording the same
ticket twice (a consumer handed a change again) counts it once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import replace

from redis.asyncio import Redis

from bridge.core.teams import Group, Person, Role
from bridge.core.ticket_fields import FieldDef, parse_definition
from bridge.store.records import NotFound, _decode_map, _s
from bridge.store.scripts import Script

_TAG = "bridge:{team}"
PEOPLE = f"{_TAG}:people"  # set of names
GROUPS = f"{_TAG}:groups"  # hash name -> JSON
FIELDS = f"{_TAG}:fields"  # hash key -> JSON definition (the admin API's; config/ adds more)
CAPACITY = f"{_TAG}:capacity"  # hash name -> capacity (read by the round-robin script)
OWNER = f"{_TAG}:owner"  # hash ticket id -> the agent whose load holds it
RR_SEQ = f"{_TAG}:rrseq"


def person_key(name: str) -> str:
    return f"{_TAG}:person:{name}"


def token_key(token_hash: str) -> str:
    return f"{_TAG}:token:{token_hash}"


def load_key(name: str) -> str:
    return f"{_TAG}:load:{name}"


def rotation_key(group: str) -> str:
    """Zset: the group's available agents -> the sequence number of their last assignment
    (lowest first: round robin)."""
    return f"{_TAG}:rr:{group}"


def waiting_key(group: str) -> str:
    """Zset: the group's tickets waiting for an agent with room -> when they started waiting."""
    return f"{_TAG}:waiting:{group}"


def hash_token(token: str) -> str:
    """Tokens are kept as their SHA-256 (they are random 256-bit strings: no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


# KEYS: rotation zset, sequence, capacity hash, owner hash, then one load set per candidate.
# ARGV: ticket id, then the candidates' names in the same order as their load sets.
# Returns the chosen agent (the one already holding the ticket, if any) or false.
_PICK = """
local held = redis.call('HGET', KEYS[4], ARGV[1])
if held then return held end
local best, best_score, best_load = nil, nil, nil
for i = 2, #ARGV do
  local name = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], name)
  if score then
    score = tonumber(score)
    local capacity = tonumber(redis.call('HGET', KEYS[3], name) or '0')
    if redis.call('SCARD', KEYS[i + 3]) < capacity and
       (best == nil or score < best_score or (score == best_score and name < best)) then
      best, best_score, best_load = name, score, KEYS[i + 3]
    end
  end
end
if best == nil then return false end
redis.call('SADD', best_load, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], best)
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), best)
return best
"""

# KEYS: owner hash, the new holder's load set ('' name: none), the previous holder's load.
# ARGV: ticket id, new holder ('' : the ticket holds no agent's capacity).
_SYNC = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and held ~= ARGV[2] then redis.call('SREM', KEYS[3], ARGV[1]) end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return held or ''
"""


class TeamStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pick = Script(redis, _PICK)

    # ------------------------------------------------------------ people

    async def get_person(self, name: str) -> Person:
        found = await self.find_person(name)
        if found is None:
            raise NotFound(f"agent {name} not found")
        return found

    async def find_person(self, name: str) -> Person | None:
        raw = _decode_map(await self.redis.hgetall(person_key(name)))
        return _person(raw) if raw else None

    async def people(self) -> list[Person]:
        names = sorted(_s(n) for n in await self.redis.smembers(PEOPLE))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(person_key(name))
            rows = await pipe.execute()
        return [_person(_decode_map(r)) for r in rows if r]

    async def save_person(self, person: Person, *, token: str | None = None) -> None:
        """Create or replace a person; with `token`, it becomes their only API token."""
        fields = {"name": person.name, "role": person.role.value,
                  "display_name": person.display_name, "locale": person.locale,
                  "time_zone": person.time_zone, "groups": json.dumps(sorted(person.groups)),
                  "capacity": str(person.capacity), "available": "1" if person.available else ""}
        old = await self.find_person(person.name)
        old_hash = _s(await self.redis.hget(person_key(person.name), "token_hash"))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(person_key(person.name), mapping=fields)
            pipe.sadd(PEOPLE, person.name)
            pipe.hset(CAPACITY, person.name, person.capacity)
            if token is not None:
                if old_hash:
                    pipe.delete(token_key(old_hash))
                pipe.set(token_key(hash_token(token)), person.name)
                pipe.hset(person_key(person.name), "token_hash", hash_token(token))
            for group in (old.groups if old else frozenset()) - person.groups:
                pipe.zrem(rotation_key(group), person.name)
            for group in person.groups:
                # Read-only people work no tickets (bridge.core.teams.check_person refuses
                # them available; a record saved before that check leaves the rotation).
                if person.available and person.role is not Role.READ_ONLY:
                    pipe.zadd(rotation_key(group), {person.name: 0}, nx=True)
                else:
                    pipe.zrem(rotation_key(group), person.name)
            await pipe.execute()

    async def retire_read_only(self) -> list[str]:
        """Read-only people saved available before that was refused (bridge.core.teams.
        check_person): made unavailable, so out of every rotation. Their names."""
        retired = []
        for person in await self.people():
            if person.role is Role.READ_ONLY and person.available:
                await self.save_person(replace(person, available=False))
                retired.append(person.name)
        return retired

    async def delete_person(self, name: str) -> None:
        person = await self.get_person(name)
        token = _s(await self.redis.hget(person_key(name), "token_hash"))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(person_key(name))
            pipe.srem(PEOPLE, name)
            pipe.hdel(CAPACITY, name)
            if token:
                pipe.delete(token_key(token))
            for group in person.groups:
                pipe.zrem(rotation_key(group), name)
            await pipe.execute()

    async def token_hash_of(self, name: str) -> str | None:
        """The SHA-256 of the person's current API token (None: no person, no token)."""
        return _s(await self.redis.hget(person_key(name), "token_hash")) or None

    async def name_of_token(self, token: str) -> str | None:
        return _s(await self.redis.get(token_key(hash_token(token)))) or None

    @staticmethod
    def new_token() -> str:
        return "bt_" + secrets.token_urlsafe(32)

    # ------------------------------------------------------------ groups

    async def groups(self) -> list[Group]:
        raw = _decode_map(await self.redis.hgetall(GROUPS))
        return [Group(name=k, description=json.loads(v).get("description", ""))
                for k, v in sorted(raw.items())]

    async def group_exists(self, name: str) -> bool:
        return bool(await self.redis.hexists(GROUPS, name))

    async def save_group(self, group: Group) -> None:
        await self.redis.hset(GROUPS, group.name,
                              json.dumps({"description": group.description}))

    async def delete_group(self, name: str) -> None:
        await self.redis.hdel(GROUPS, name)

    # ------------------------------------------------------------ fields

    async def field_definitions(self) -> list[FieldDef]:
        raw = _decode_map(await self.redis.hgetall(FIELDS))
        return [parse_definition(json.loads(v)) for _, v in sorted(raw.items())]

    async def save_field(self, definition: FieldDef) -> None:
        await self.redis.hset(FIELDS, definition.key, json.dumps(definition.to_dict()))

    async def delete_field(self, key: str) -> bool:
        return bool(await self.redis.hdel(FIELDS, key))

    # ------------------------------------------------------------ capacity and round robin

    async def load(self, name: str) -> int:
        return int(await self.redis.scard(load_key(name)))

    async def loads(self, names: Iterable[str]) -> dict[str, int]:
        names = list(names)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(load_key(name))
            counts = await pipe.execute()
        return dict(zip(names, map(int, counts), strict=True))

    async def pick_agent(self, group: str, ticket_id: str) -> str | None:
        """Count the ticket against the group's available agent with room who was given a
        ticket longest ago (atomic: concurrent picks never overfill anyone). Returns the
        agent, or the one already holding the ticket; None when nobody has room."""
        candidates = sorted(_s(n) for n in await self.redis.zrange(rotation_key(group), 0, -1))
        if not candidates:
            return None
        chosen = await self._pick(
            keys=[rotation_key(group), RR_SEQ, CAPACITY, OWNER,
                  *(load_key(n) for n in candidates)],
            args=[ticket_id, *candidates])
        return _s(chosen) or None

    async def hold(self, ticket_id: str, holder: str) -> str:
        """Record who holds the ticket as an active conversation ("" : nobody) and free the
        previous holder's capacity. Returns the previous holder ("" : none)."""
        return (await self.hold_many([(ticket_id, holder)]))[ticket_id]

    async def hold_many(self, holders: Sequence[tuple[str, str]]) -> dict[str, str]:
        """hold() for many (ticket id, holder) pairs in two round trips; returns each
        ticket's previous holder. A ticket nobody held and nobody holds (a new, unassigned
        one: most of what a batch of changes holds) needs no write."""
        if not holders:
            return {}
        ids = [tid for tid, _ in holders]
        previous = dict(zip(ids, (_s(h) for h in await self.redis.hmget(OWNER, ids)),
                            strict=True))
        moves = [(tid, holder) for tid, holder in holders if holder or previous[tid]]
        if moves:
            async with self.redis.pipeline(transaction=False) as pipe:
                # EVAL, not redis-py's EVALSHA after a SCRIPT LOAD: a retry of the
                # pipeline after a dropped connection does not load its scripts again, and
                # a Redis that restarted meanwhile has none (scripts.py).
                for tid, holder in moves:
                    pipe.eval(_SYNC, 3, OWNER, load_key(holder), load_key(previous[tid]),
                              tid, holder)
                held = await pipe.execute()
            previous.update((tid, _s(h)) for (tid, _), h in zip(moves, held, strict=True))
        return previous

    async def wait(self, group: str, ticket_id: str, now_ms: int) -> None:
        await self.redis.zadd(waiting_key(group), {ticket_id: now_ms}, nx=True)

    async def stop_waiting(self, group: str, ticket_id: str) -> None:
        await self.redis.zrem(waiting_key(group), ticket_id)

    async def waiting(self, group: str, limit: int = 100) -> list[str]:
        return [_s(t) for t in await self.redis.zrange(waiting_key(group), 0, limit - 1)]

    async def waiting_groups(self) -> list[str]:
        """Groups with tickets waiting (a SCAN would cross every key; groups are few)."""
        groups = [g.name for g in await self.groups()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for g in groups:
                pipe.zcard(waiting_key(g))
            sizes = await pipe.execute()
        return [g for g, n in zip(groups, sizes, strict=True) if n]


def _person(raw: dict[str, str]) -> Person:
    return Person(name=raw["name"], role=Role(raw["role"]),
                  display_name=raw.get("display_name", ""), locale=raw.get("locale", ""),
                  time_zone=raw.get("time_zone", ""),
                  groups=frozenset(json.loads(raw.get("groups") or "[]")),
                  capacity=int(raw.get("capacity") or 0), available=raw.get("available") == "1")

