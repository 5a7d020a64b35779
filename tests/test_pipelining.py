"""PipelinedScript and AutoPipeline against a real Redis: coalescing, ordering, errors,
reloads, retries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.store import link as link_module
from bridge.store.pipelining import AutoPipeline, PipelinedScript
from bridge.store.records import read_hashes
from tests.redis_support import writes_paused

# Echoes its argument and counts its runs; "boom" is an error reply.
ECHO = """
redis.call('INCR', KEYS[1])
if ARGV[1] == 'boom' then return redis.error_reply('BOOM asked for it') end
return {ARGV[1], ARGV[2]}
"""


async def test_concurrent_calls_share_round_trips_and_each_gets_its_own_reply(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    script = PipelinedScript(aredis, ECHO)
    replies = await asyncio.gather(*(script(["runs"], [f"v{i}", i]) for i in range(300)))
    assert replies == [[f"v{i}".encode(), str(i).encode()] for i in range(300)]
    assert script.calls == 300
    assert script.link.writes < 10  # issued in one loop iteration: coalesced
    assert sync_redis.get("runs") == b"300"


async def test_calls_one_after_another_reuse_one_connection(
        redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5)
    try:
        script = PipelinedScript(client, ECHO)
        for i in range(20):
            assert await script(["runs"], ["a", i]) == [b"a", str(i).encode()]
        assert script.link.writes == 20 and script.link.opened == 1
        # A connection that failed is replaced; the call goes again on the new one.
        sync_redis.client_kill_filter(_type="normal", skipme=True)
        assert await script(["runs"], ["b", 0]) == [b"b", b"0"]
        assert script.link.opened == 2
        assert sync_redis.get("runs") == b"21"
        assert len(client.connection_pool._in_use_connections) == 1  # the old one went back
    finally:
        await client.aclose()


async def test_the_pipelines_of_one_client_share_their_held_connections(
        redis_url: str) -> None:
    """A process may build many stores on one client (tests, CLI commands): together they
    keep no more connections out of the pool than one."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        scripts = [PipelinedScript(client, ECHO) for _ in range(10)]
        commands = AutoPipeline(client)
        for script in scripts:
            assert await script(["runs"], ["a", 1]) == [b"a", b"1"]
            assert await commands([("GET", "runs")]) == [str(scripts.index(script) + 1)
                                                        .encode()]
        assert commands.link is scripts[0].link
        assert commands.link.opened == 1
        assert len(client.connection_pool._in_use_connections) == 1
    finally:
        await client.aclose()


async def test_one_error_reply_fails_only_its_caller(aredis: redis.asyncio.Redis) -> None:
    script = PipelinedScript(aredis, ECHO)
    results = await asyncio.gather(script(["runs"], ["a", 1]), script(["runs"], ["boom", 2]),
                                   script(["runs"], ["c", 3]), return_exceptions=True)
    assert results[0] == [b"a", b"1"]
    assert isinstance(results[1], ResponseError) and "BOOM" in str(results[1])
    assert results[2] == [b"c", b"3"]


async def test_script_reloaded_after_flush(aredis: redis.asyncio.Redis,
                                          sync_redis: redis.Redis) -> None:
    script = PipelinedScript(aredis, ECHO)
    assert await script(["runs"], ["x", 1]) == [b"x", b"1"]
    sync_redis.script_flush()
    assert sync_redis.script_exists(script.sha) == [False]
    replies = await asyncio.gather(*(script(["runs"], ["y", i]) for i in range(20)))
    assert replies == [[b"y", str(i).encode()] for i in range(20)]
    # NOSCRIPT means "did not run": every call ran exactly once.
    assert sync_redis.get("runs") == b"21"


async def test_argument_redis_cannot_take_fails_in_the_caller(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    script = PipelinedScript(aredis, ECHO)
    with pytest.raises(TypeError):
        await script(["runs"], [None, 1])  # type: ignore[list-item]
    assert script.calls == 0
    assert await script(["runs"], ["ok", 1]) == [b"ok", b"1"]
    assert sync_redis.get("runs") == b"1"


async def test_a_cancelled_caller_does_not_cancel_the_others(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    script = PipelinedScript(aredis, ECHO)
    assert await script(["warm"], ["up", 0]) == [b"up", b"0"]  # the link is open
    first = asyncio.ensure_future(script(["runs"], ["a", 1]))
    second = asyncio.ensure_future(script(["runs"], ["b", 2]))
    await asyncio.sleep(0)  # both sent
    first.cancel()
    assert await second == [b"b", b"2"]
    assert sync_redis.get("runs") == b"2"  # the cancelled one still ran (as a sent request)


async def test_connection_killed_between_calls_is_retried_once(
        redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, client_name="pipelined")
    try:
        script = PipelinedScript(client, ECHO)
        assert await script(["runs"], ["a", 1]) == [b"a", b"1"]
        killed = sync_redis.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        # The pooled connection is dead: the batch fails on it and is sent again.
        assert await script(["runs"], ["b", 2]) == [b"b", b"2"]
        assert sync_redis.get("runs") == b"2"
    finally:
        await client.aclose()


async def test_no_reply_in_time_is_a_redis_timeout_then_recovers(
        redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.3)
    try:
        script = PipelinedScript(client, ECHO)
        assert await script(["runs"], ["a", 1]) == [b"a", b"1"]
        with writes_paused(sync_redis, 1500):
            results = await asyncio.gather(script(["runs"], ["b", 2]),
                                           script(["runs"], ["c", 3]),
                                           return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert await script(["runs"], ["d", 4]) == [b"d", b"4"]
    finally:
        await client.aclose()


async def test_redis_down_is_a_connection_error(sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        script = PipelinedScript(client, ECHO)
        with pytest.raises(RedisConnectionError):
            await script(["runs"], ["a", 1])
    finally:
        await client.aclose()


# The connection dies as the first call goes out (before Redis answered NOSCRIPT), or as
# the first SCRIPT LOAD, with its call behind it, goes out.
@pytest.mark.parametrize("lose_at", ["calls", "load"])
async def test_reload_then_a_lost_connection_still_runs_every_call_once(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        lose_at: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        script = PipelinedScript(client, ECHO)
        sent: list[str] = []
        original = link_module._Wire.send

        def lose_the_connection_at(wire: Any, commands: Any) -> Any:
            data = b"".join(commands)
            kind = "load" if b"SCRIPT" in data else "calls"
            if kind == lose_at and lose_at not in sent:
                sync_redis.client_kill_filter(_type="normal", skipme=True)
            sent.append(kind)
            return original(wire, commands)

        monkeypatch.setattr(link_module._Wire, "send", lose_the_connection_at)
        sync_redis.script_flush()
        replies = await asyncio.gather(*(script(["runs"], ["z", i]) for i in range(5)))
        assert replies == [[b"z", str(i).encode()] for i in range(5)]
        assert lose_at in sent
        assert sync_redis.get("runs") == b"5"  # each ran once
        assert script.link.opened == 2
    finally:
        await client.aclose()


async def test_a_second_lost_connection_is_a_connection_error(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        commands = AutoPipeline(client)
        assert await commands([("ECHO", "up")]) == [b"up"]
        original = link_module._Wire.send

        def always_lost(wire: Any, packed: Any) -> Any:
            sync_redis.client_kill_filter(_type="normal", skipme=True)
            return original(wire, packed)

        monkeypatch.setattr(link_module._Wire, "send", always_lost)
        with pytest.raises(RedisConnectionError):
            await commands([("INCR", "tries")])
        monkeypatch.undo()
        assert await commands([("GET", "tries")]) in ([None], [b"1"], [b"2"])
        assert commands.link.opened == 3  # the first, the retry's, and this one's
    finally:
        await client.aclose()


async def test_read_hashes_gives_each_hash_or_nothing_and_raises_a_wrong_type(
        aredis: redis.asyncio.Redis) -> None:
    await aredis.hset("h1", mapping={"a": "1", "é": "ü"})
    await aredis.set("not-a-hash", "x")
    commands = AutoPipeline(aredis)
    assert await read_hashes(commands, ["h1", "missing"]) == [{"a": "1", "é": "ü"}, {}]
    assert await read_hashes(commands, []) == []
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await read_hashes(commands, ["h1", "not-a-hash"])
