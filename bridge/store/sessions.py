"""Workspace sign-in sessions (bridge/web/session.py): an opaque random id in the browser's
cookie, the session's record in Redis under a digest of that id (a copy of the database
does not hand out live cookies)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from bridge.store.keys import PREFIX
from bridge.store.records import _decode_map


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    name: str
    role: str
    csrf_token: str
    # A digest of the token signed in with: the session ends when that token no longer
    # signs anyone in (rotated, removed). "" for a record made before stamps existed.
    stamp: str = ""


def _key(session_id: str) -> str:
    return f"{PREFIX}:sess:{hashlib.sha256(session_id.encode()).hexdigest()}"


class SessionStore:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def create(self, *, name: str, role: str, stamp: str) -> SessionRecord:
        """A new session with fresh id and CSRF token (never one the browser chose)."""
        record = SessionRecord(secrets.token_urlsafe(32), name, role, secrets.token_urlsafe(32),
                               stamp)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(record.session_id), mapping={
                "name": name, "role": role, "csrf": record.csrf_token, "stamp": stamp})
            pipe.expire(_key(record.session_id), self.ttl_s)
            await pipe.execute()
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        if not session_id or len(session_id) > 128:
            return None
        fields = _decode_map(await self.redis.hgetall(_key(session_id)))
        if not {"name", "role", "csrf"} <= fields.keys():
            return None
        return SessionRecord(session_id, fields["name"], fields["role"], fields["csrf"],
                             fields.get("stamp", ""))

    async def delete(self, session_id: str) -> None:
        if session_id and len(session_id) <= 128:
            await self.redis.delete(_key(session_id))
