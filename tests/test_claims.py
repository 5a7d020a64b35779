"""SET NX claims that tell our own lost-reply retry from someone else's hold."""

from __future__ import annotations

import redis.asyncio

from bridge.store.claims import claim, new_token


async def test_a_claim_is_ours_once_and_only_with_our_token(
        aredis: redis.asyncio.Redis) -> None:
    mine, theirs = new_token(), new_token()
    assert mine != theirs
    assert await claim(aredis, "k", mine, ttl_ms=10_000)
    # The same call sent again by the client after a lost reply: still ours.
    assert await claim(aredis, "k", mine, ttl_ms=10_000)
    # Anyone else (another job, a retried run with a token of its own) is refused.
    assert not await claim(aredis, "k", theirs, ttl_ms=10_000)
    assert await aredis.get("k") == mine.encode()
    assert 0 < await aredis.pttl("k") <= 10_000


async def test_a_released_or_expired_claim_can_be_taken(aredis: redis.asyncio.Redis) -> None:
    assert await claim(aredis, "k", "a", ttl_ms=10_000)
    await aredis.delete("k")
    assert await claim(aredis, "k", "b", ttl_ms=10_000)
