"""Claims: a key set only if absent (SET NX), owned by whoever holds its token.

The Redis clients retry a command whose reply was lost (a dropped connection, a Redis
restart): a SET NX that did take the key is then sent again and answers nil, as if
someone else held it. Comparing the key's value with our own token tells the two apart.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from bridge.store.scripts import Script

# A lease released on the way out only lets a standby take over before the lease's TTL runs
# out: with Redis gone (stopped first, or failing over) the workers' ride-out retries would
# hold a stopping process ~25 s, so a release at exit is given this long, then left to the TTL.
LEASE_RELEASE_AT_EXIT_S = 2.0


def new_token() -> str:
    return uuid.uuid4().hex


async def claim(redis: Redis, key: str, token: str, *, ttl_ms: int) -> bool:
    """True when the key is ours now: just set, or set by the lost first try of this call."""
    if await redis.set(key, token, nx=True, px=ttl_ms):
        return True
    held = await redis.get(key)
    return (held.decode() if isinstance(held, bytes) else held) == token


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Claims:
    """The claims the workers take: a send's lock while its API call may be in flight, and
    the at-most-once markers of trigger rules and timers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._release = Script(redis, _RELEASE)

    async def take(self, key: str, token: str, *, ttl_ms: int) -> bool:
        return await claim(self.redis, key, token, ttl_ms=ttl_ms)

    async def remaining_ms(self, key: str) -> int:
        """How long the claim still holds (<= 0: it does not)."""
        return int(await self.redis.pttl(key))

    async def release(self, key: str, token: str) -> None:
        """Drop the claim if it is still ours (it may have expired and been taken)."""
        await self._release(keys=[key], args=[token])
