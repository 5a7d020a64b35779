"""Webhook export endpoints and their signing secrets, in Redis.

One hash per endpoint (`bridge:{wh:<id>}:ep`) holds its settings and secrets; a zset lists
the endpoints by creation; a counter (`bridge:wh:version`) moves on every change, so the
change-log consumer and the sender re-read the list only when it changed. The counter moves
once the change is written (a round trip later: the keys live in different Redis Cluster
slots), so a reader that sees the new version reads the change.

Secrets are Standard Webhooks secrets (`whsec_` + base64 of 32 random bytes). The API shows
a secret once, when it is created or rotated; a rotated-out secret keeps signing (beside the
new one) for ROTATION_GRACE_S, so receivers can switch without losing a delivery.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from redis.asyncio import Redis

from bridge.core.export_policy import Endpoint
from bridge.store.records import NotFound, _decode_map, _s

PREFIX = "bridge:wh"
ENDPOINTS = f"{PREFIX}:endpoints"  # zset endpoint id -> creation ms
VERSION = f"{PREFIX}:version"
ROTATION_GRACE_S = 24 * 3600
SECRET_BYTES = 32
MAX_ENDPOINTS = 50


def endpoint_tag(endpoint_id: str) -> str:
    """Every key of one endpoint shares this hash tag (its scripts touch several)."""
    return f"bridge:{{wh:{endpoint_id}}}"


def endpoint_key(endpoint_id: str) -> str:
    return f"{endpoint_tag(endpoint_id)}:ep"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class TooManyEndpoints(Exception):
    pass


def _endpoint(fields: dict[str, str]) -> Endpoint:
    return Endpoint(
        id=fields["id"], url=fields["url"], events=tuple(json.loads(fields["events"])),
        description=fields.get("description", ""), enabled=fields.get("enabled") == "1",
        anonymize=fields.get("anonymize") == "1",
        follow_redirects=fields.get("follow_redirects") == "1",
        created_at_ms=int(fields.get("created_at_ms") or 0),
        disabled_reason=fields.get("disabled_reason", ""))


def _fields(endpoint: Endpoint) -> dict[str, str]:
    return {"id": endpoint.id, "url": endpoint.url, "events": json.dumps(list(endpoint.events)),
            "description": endpoint.description, "enabled": "1" if endpoint.enabled else "0",
            "anonymize": "1" if endpoint.anonymize else "0",
            "follow_redirects": "1" if endpoint.follow_redirects else "0",
            "created_at_ms": str(endpoint.created_at_ms),
            "disabled_reason": endpoint.disabled_reason}


class EndpointStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def version(self) -> int:
        return int(_s(await self.redis.get(VERSION)) or 0)

    async def create(self, *, url: str, events: tuple[str, ...], description: str = "",
                     anonymize: bool = False, follow_redirects: bool = False, now_ms: int
                     ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret (shown to the admin once)."""
        if await self.redis.zcard(ENDPOINTS) >= MAX_ENDPOINTS:
            raise TooManyEndpoints(f"at most {MAX_ENDPOINTS} endpoints")
        endpoint = Endpoint(id="ep_" + secrets.token_hex(8), url=url, events=events,
                            description=description, anonymize=anonymize,
                            follow_redirects=follow_redirects, created_at_ms=now_ms)
        secret = new_secret()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(endpoint_key(endpoint.id), mapping={**_fields(endpoint),
                                                          "secret": secret})
            pipe.zadd(ENDPOINTS, {endpoint.id: now_ms})
            pipe.zcard(ENDPOINTS)
            *_, count = await pipe.execute()
        if count > MAX_ENDPOINTS:
            # Creates racing past the check above: the one that finds too many takes its
            # endpoint back (the keys live in different Redis Cluster slots, so no
            # transaction holds the check and the write together).
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(ENDPOINTS, endpoint.id)
                pipe.delete(endpoint_key(endpoint.id))
                await pipe.execute()
            raise TooManyEndpoints(f"at most {MAX_ENDPOINTS} endpoints")
        await self.redis.incr(VERSION)
        return endpoint, secret

    async def get(self, endpoint_id: str) -> Endpoint:
        raw = _decode_map(await self.redis.hgetall(endpoint_key(endpoint_id)))
        if not raw.get("id"):
            raise NotFound(f"webhook endpoint {endpoint_id} not found")
        return _endpoint(raw)

    async def all(self) -> list[Endpoint]:
        ids = [_s(i) for i in await self.redis.zrange(ENDPOINTS, 0, -1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint_id in ids:
                pipe.hgetall(endpoint_key(endpoint_id))
            rows: list[Any] = await pipe.execute()
        return [_endpoint(_decode_map(r)) for r in rows if r]

    async def update(self, endpoint_id: str, **changes: Any) -> Endpoint:
        """Change url, events, description, enabled, anonymize or follow_redirects."""
        current = await self.get(endpoint_id)
        values = {**_fields(current)}
        for name, value in changes.items():
            if name == "events":
                values["events"] = json.dumps(list(value))
            elif name in ("enabled", "anonymize", "follow_redirects"):
                values[name] = "1" if value else "0"
            else:
                values[name] = str(value)
        if changes.get("enabled"):
            values["disabled_reason"] = ""
        await self.redis.hset(endpoint_key(endpoint_id), mapping=values)
        await self.redis.incr(VERSION)
        return _endpoint(values)

    async def disable(self, endpoint_id: str, reason: str) -> None:
        """The sender's way to stop an endpoint (410 Gone); an admin re-enables it."""
        if await self.redis.exists(endpoint_key(endpoint_id)):
            await self.redis.hset(endpoint_key(endpoint_id),
                                  mapping={"enabled": "0", "disabled_reason": reason})
            await self.redis.incr(VERSION)

    async def delete(self, endpoint_id: str) -> None:
        await self.get(endpoint_id)
        doomed = [k async for k in self.redis.scan_iter(
            match=f"{endpoint_tag(endpoint_id)}:*", count=500)]
        async with self.redis.pipeline(transaction=False) as pipe:
            if doomed:
                pipe.delete(*doomed)
            pipe.zrem(ENDPOINTS, endpoint_id)
            await pipe.execute()
        await self.redis.incr(VERSION)

    async def rotate_secret(self, endpoint_id: str, *, now_ms: int) -> str:
        """A new secret; the current one stays valid (it signs too) for ROTATION_GRACE_S."""
        await self.get(endpoint_id)
        key = endpoint_key(endpoint_id)
        secret = new_secret()
        current = _s(await self.redis.hget(key, "secret"))
        await self.redis.hset(key, mapping={
            "secret": secret, "previous_secret": current,
            "previous_until_ms": str(now_ms + ROTATION_GRACE_S * 1000)})
        await self.redis.incr(VERSION)
        return secret

    async def signing_secrets(self, endpoint_id: str, *, now_ms: int) -> list[str]:
        """The secrets a delivery is signed with: the current one, and the previous one
        while its grace period lasts."""
        raw = _decode_map(await self.redis.hgetall(endpoint_key(endpoint_id)))
        out = [raw["secret"]] if raw.get("secret") else []
        if raw.get("previous_secret") and int(raw.get("previous_until_ms") or 0) > now_ms:
            out.append(raw["previous_secret"])
        return out

    # ---------------------------------------------------------------- the sender's lease

    async def acquire_lease(self, token: str, *, ttl_ms: int) -> bool:
        """One sender process delivers at a time (order per ticket needs one writer per
        endpoint); a standby takes over when the holder stops renewing."""
        if await self.redis.set(SENDER_LEASE, token, nx=True, px=ttl_ms):
            return True
        return bool(await self.redis.eval(_RENEW, 1, SENDER_LEASE, token, ttl_ms))

    async def release_lease(self, token: str) -> None:
        await self.redis.eval(_RELEASE, 1, SENDER_LEASE, token)


SENDER_LEASE = f"{PREFIX}:sender:lease"
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
