"""Claims: a key set only if absent (SET NX), owned by whoever holds its token.

The Redis clients retry a command whose reply was lost (a dropped connection, a Redis
restart): a SET NX that did take the key is then sent again and answers nil, as if
someone else held it. Comparing the key's value with our own token tells the two apart.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis


def new_token() -> str:
    return uuid.uuid4().hex


async def claim(redis: Redis, key: str, token: str, *, ttl_ms: int) -> bool:
    """True when the key is ours now: just set, or set by the lost first try of this call."""
    if await redis.set(key, token, nx=True, px=ttl_ms):
        return True
    held = await redis.get(key)
    return (held.decode() if isinstance(held, bytes) else held) == token
