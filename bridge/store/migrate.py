"""Move stored contacts to the ids the current contact key gives them.

Contact ids were an unkeyed hash of the address (before BRIDGE_CONTACT_KEY), under the hash
tag {c:<id>}; they are now an HMAC with the key, under their partition's tag
({p:NNN}:c:<id>, bridge/store/keys.py). An upgrade from that layout, or a change of key,
gives every contact a new id and new key names. The new names are in another slot: each key
is copied (DUMP/RESTORE, TTL kept) and the old one deleted afterwards, which also works on
Redis Cluster, where RENAME across slots fails. The change log entries a moved contact left
in its old partition name tickets, which keep their ids: the relay still hands them on.

Per contact, in an order that a rerun completes whatever an interruption left:
1. note old id -> new id in MAPPING (the provider-id pass below needs it after step 5);
2. copy every key of the old id (either layout) to the new id's names (RESTORE REPLACE: a
   rerun copies again);
3. point the copies at the new id: the contact's `id`, each ticket's `contact_id`;
4. move the global references: ticket -> contact hash, the contact's ticket list, the
   opening mark;
5. delete the old keys, the contact hash last (while it exists, a rerun redoes 2-5).
Then every outbound provider id reference ("<contact> <ticket> <event>") naming an old id
is rewritten, and MAPPING (it pairs the reversible old ids with the new ones) is deleted.

Run it with the web process stopped: a message routed meanwhile under an old id would be
left there, and one under a new id would open a second ticket.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bridge.store import keys

MAPPING = f"{keys.PREFIX}:migrate:contact-ids"
_SCAN_COUNT = 500


def legacy_contact_id(channel: str, address: str) -> str:
    """The unkeyed id of earlier versions (what a stored contact may still be under)."""
    return hashlib.sha256(f"{channel}\x00{address}".encode()).hexdigest()[:16]


@dataclass
class MigrationReport:
    moved: int = 0
    already: int = 0
    # Contact hashes (key names) without channel or address (their id cannot be
    # recomputed) or without the `id` field: left where they are.
    skipped: list[str] = field(default_factory=list)
    provider_refs: int = 0


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


async def migrate_contact_ids(redis: Redis, new_id: Callable[[str, str], str]
                              ) -> MigrationReport:
    """Move every stored contact whose id is not new_id(channel, address). Idempotent."""
    report = MigrationReport()
    moved_to: set[str] = set()
    for glob, prefix_of in ((keys.LEGACY_CONTACTS_GLOB, keys.legacy_contact_prefix),
                            (keys.CONTACTS_GLOB, keys.contact_prefix)):
        async for raw in redis.scan_iter(match=glob, count=_SCAN_COUNT):
            name = _s(raw)
            # The id as the contact hash records it (routing writes it), checked against
            # the key name: no parsing of the key layout, and a ticket's key that merely
            # ends in ":contact" (an idempotency key) is passed over.
            old, channel, address = (_s(v) for v in await redis.hmget(
                name, "id", "channel", "address"))
            if not old or f"{prefix_of(old)}:contact" != name:
                if _s(await redis.type(name)) == "hash":
                    report.skipped.append(name)
                continue
            if not channel or not address:
                report.skipped.append(name)
                continue
            new = new_id(channel, address)
            if new == old and prefix_of is keys.contact_prefix:
                # The scan can also return a contact this run moved: not "already" keyed.
                report.already += old not in moved_to
                continue
            await _move_contact(redis, old, new, old_prefix=prefix_of(old))
            moved_to.add(new)
            report.moved += 1
    report.provider_refs = await _rewrite_provider_refs(redis)
    await redis.delete(MAPPING)
    return report


async def _move_contact(redis: Redis, old: str, new: str, *, old_prefix: str) -> None:
    await redis.hset(MAPPING, old, new)
    new_prefix = keys.contact_prefix(new)
    old_contact = f"{old_prefix}:contact"
    names = [_s(k) async for k in redis.scan_iter(match=_glob_escape(old_prefix) + ":*",
                                                  count=_SCAN_COUNT)]
    ticket_ids: list[str] = []
    for name in names:
        suffix = name[len(old_prefix):]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.dump(name)
            pipe.pttl(name)
            dumped, ttl_ms = await pipe.execute()
        if dumped is None:
            continue  # expired meanwhile (seen ids, idempotency records)
        await redis.restore(new_prefix + suffix, max(int(ttl_ms), 0), dumped, replace=True)
        parts = suffix.split(":")
        if len(parts) == 3 and parts[1] == "t":
            ticket_ids.append(parts[2])
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.contact(new), "id", new)
        for tid in ticket_ids:
            pipe.hset(keys.ticket(new, tid), "contact_id", new)
            pipe.hset(keys.TICKET_CONTACT, tid, new)
        await pipe.execute()
    listed = await redis.zrange(keys.index("contact", old), 0, -1, withscores=True)
    opening = await redis.zscore(keys.OPENING, old)
    async with redis.pipeline(transaction=False) as pipe:
        if listed:
            pipe.zadd(keys.index("contact", new), {_s(m): s for m, s in listed})
        if opening is not None:
            pipe.zadd(keys.OPENING, {new: opening})
        pipe.zrem(keys.OPENING, old)
        pipe.delete(keys.index("contact", old))
        others = [n for n in names if n != old_contact]
        if others:
            pipe.delete(*others)
        await pipe.execute()
    # Last: while it exists, a rerun finds this contact and finishes the move.
    await redis.delete(old_contact)


async def _rewrite_provider_refs(redis: Redis) -> int:
    mapping = {_s(k): _s(v) for k, v in (await redis.hgetall(MAPPING)).items()}
    if not mapping:
        return 0
    rewritten = 0
    async for raw in redis.scan_iter(match=keys.provider_message("*"), count=_SCAN_COUNT):
        ref = _s(await redis.get(raw))
        cid, sep, rest = ref.partition(" ")
        # KEEPTTL: the reference keeps its 30-day expiry.
        if sep and cid in mapping and await redis.set(
                raw, f"{mapping[cid]} {rest}", keepttl=True, xx=True):
            rewritten += 1
    return rewritten


def _glob_escape(text: str) -> str:
    """SCAN MATCH is a glob: escape its special characters in a literal prefix."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
