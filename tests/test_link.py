"""RedisLink: one multiplexed connection per pool, against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.store.link import RedisLink
from bridge.store.pipelining import pack
from tests.redis_support import writes_paused


async def test_replies_come_back_to_their_callers_in_order_and_calls_share_writes(
        aredis: redis.asyncio.Redis) -> None:
    link = RedisLink.of(aredis)
    assert RedisLink.of(aredis) is link  # one per pool
    assert await link.call([pack("ECHO", "open")]) == [b"open"]
    assert link.writes == 1
    # The calls made in one loop iteration go out together, as one write.
    first = link.call([pack("ECHO", "first")])
    rest = [link.call([pack("ECHO", f"e{i}"), pack("INCR", "n")]) for i in range(50)]
    replies = await asyncio.gather(first, *rest)
    assert replies[0] == [b"first"]
    assert replies[1:] == [[f"e{i}".encode(), i + 1] for i in range(50)]
    assert link.writes == 2 and link.opened == 1


async def test_error_replies_are_redis_py_exceptions_given_as_values(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    sync_redis.set("s", "x")
    link = RedisLink.of(aredis)
    wrong_type, missing_script, fine = await link.call(
        [pack("HGET", "s", "f"), pack("EVALSHA", "0" * 40, 0), pack("GET", "s")])
    assert isinstance(wrong_type, ResponseError) and "WRONGTYPE" in str(wrong_type)
    assert isinstance(missing_script, NoScriptError)
    assert fine == b"x"  # the connection is still in step after error replies


async def test_a_decoding_client_gets_text(redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        sync_redis.hset("h", mapping={"é": "ü"})
        assert await RedisLink.of(client).call([pack("HGET", "h", "é")]) == ["ü"]
    finally:
        await client.aclose()


async def test_closing_the_pool_fails_the_calls_in_flight_and_the_next_call_reconnects(
        redis_url: str, sync_redis: redis.Redis) -> None:
    """Shutdown closes the pool's connections, the link's among them: a call waiting on it
    fails at once with a ConnectionError, and redis-py's close does not wait for a close
    notice the link took over (it would hang until its timeout)."""
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=30)
    try:
        link = RedisLink.of(client)
        assert await link.call([pack("ECHO", "up")]) == [b"up"]
        with writes_paused(sync_redis, 5000):
            waiting = asyncio.ensure_future(link.call([pack("INCR", "n")]))
            await asyncio.sleep(0.05)
            await asyncio.wait_for(client.connection_pool.disconnect(), timeout=3)
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(waiting, timeout=3)
        assert await link.call([pack("ECHO", "again")]) == [b"again"]
        assert link.opened == 2
    finally:
        await client.aclose()


async def test_no_reply_in_time_drops_the_link_for_every_call_on_it(
        redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.3)
    try:
        link = RedisLink.of(client)
        assert await link.call([pack("ECHO", "up")]) == [b"up"]
        with writes_paused(sync_redis, 2000):
            results = await asyncio.gather(
                link.call([pack("INCR", "n")]), link.call([pack("ECHO", "behind")]),
                return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert await link.call([pack("ECHO", "again")]) == [b"again"]
        assert link.opened == 2
        assert len(client.connection_pool._in_use_connections) == 1  # the old one went back
    finally:
        await client.aclose()


async def test_redis_down_is_a_connection_error() -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        with pytest.raises(RedisConnectionError):
            await RedisLink.of(client).call([pack("PING")])
    finally:
        await client.aclose()


async def test_push_messages_are_not_taken_for_replies(
        redis_url: str, sync_redis: redis.Redis) -> None:
    """On RESP3 Redis may push messages nobody asked for (here a client-tracking
    invalidation; redis-py's maintenance notices are pushes too): the replies that follow
    still go to their own callers."""
    client = redis.asyncio.Redis.from_url(redis_url, protocol=3)
    try:
        link = RedisLink.of(client)
        sync_redis.set("tracked", "1")
        assert await link.call([pack("CLIENT", "TRACKING", "ON"), pack("GET", "tracked")]
                               ) == [b"OK", b"1"]
        sync_redis.set("tracked", "2")  # Redis pushes an invalidation to the link
        for i in range(20):
            assert await link.call([pack("ECHO", f"after{i}")]) == [f"after{i}".encode()]
        assert await link.call([pack("GET", "tracked")]) == [b"2"]
        assert link.opened == 1
    finally:
        await client.aclose()
