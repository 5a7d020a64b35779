"""PipelinedScript against a real Redis: coalescing, ordering, errors, reloads, retries."""

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

from bridge.store.pipelining import AutoPipeline, PipelinedScript
from bridge.store.records import read_hashes

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
    assert script.batches < 300  # issued in one loop iteration: coalesced
    assert sync_redis.get("runs") == b"300"


async def test_batches_one_after_another_reuse_one_connection(
        redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5)
    try:
        script = PipelinedScript(client, ECHO)
        for i in range(20):
            assert await script(["runs"], ["a", i]) == [b"a", str(i).encode()]
        assert script.batches == 20 and script.connections.checkouts == 1
        # A connection that failed goes back to the pool with its own timeout restored.
        sync_redis.client_kill_filter(_type="normal", skipme=True)
        assert await script(["runs"], ["b", 0]) == [b"b", b"0"]
        assert script.connections.checkouts == 2
        assert sync_redis.get("runs") == b"21"
        # Held, a connection writes without redis-py's timer (the batch has its deadline);
        # back in the pool it has its own timeout again.
        held = await script.connections.take()
        assert held.socket_timeout is None
        await script.connections.give_back(held)
        assert held.socket_timeout == 5
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
        assert commands.connections is scripts[0].connections
        assert commands.connections.checkouts == 1
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
        script(["runs"], [None, 1])  # type: ignore[list-item]
    assert script.calls == 0
    assert await script(["runs"], ["ok", 1]) == [b"ok", b"1"]
    assert sync_redis.get("runs") == b"1"


async def test_a_cancelled_caller_does_not_cancel_the_batch(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    script = PipelinedScript(aredis, ECHO)
    first = script(["runs"], ["a", 1])
    second = script(["runs"], ["b", 2])
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
        sync_redis.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        try:
            results = await asyncio.gather(script(["runs"], ["b", 2]),
                                           script(["runs"], ["c", 3]),
                                           return_exceptions=True)
        finally:
            sync_redis.execute_command("CLIENT", "UNPAUSE")
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


# The connection dies just before the script is loaded, or just before the calls that got
# NOSCRIPT are sent again.
@pytest.mark.parametrize("lose_after", [["calls", "load"], ["calls", "load", "calls"]],
                         ids=["before-load", "before-resend"])
async def test_reload_then_a_lost_connection_still_runs_every_call_once(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        lose_after: list[str]) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        script = PipelinedScript(client, ECHO)
        sent: list[str] = []
        original = redis.asyncio.connection.AbstractConnection.send_packed_command

        async def lose_the_connection_at(self: Any, command: Any, check_health: bool = True
                                         ) -> None:
            data = b"".join(command) if isinstance(command, list) else bytes(command)
            kind = "load" if b"SCRIPT" in data else "calls" if b"EVALSHA" in data else ""
            if kind:
                sent.append(kind)
                if sent == lose_after:
                    sync_redis.client_kill_filter(_type="normal", skipme=True)
            await original(self, command, check_health)

        monkeypatch.setattr(redis.asyncio.connection.AbstractConnection,
                            "send_packed_command", lose_the_connection_at)
        sync_redis.script_flush()
        replies = await asyncio.gather(*(script(["runs"], ["z", i]) for i in range(5)))
        assert replies == [[b"z", str(i).encode()] for i in range(5)]
        assert sent[:len(lose_after)] == lose_after and len(sent) > len(lose_after)
        assert sync_redis.get("runs") == b"5"  # each ran once
    finally:
        await client.aclose()


async def test_a_cancelled_batch_fails_its_callers_instead_of_leaving_them_waiting(
        redis_url: str, sync_redis: redis.Redis) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        script = PipelinedScript(client, ECHO)
        assert await script(["runs"], ["warm", 0]) == [b"warm", b"0"]
        sync_redis.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        try:
            calls = [script(["runs"], ["p", i]) for i in range(3)]
            await asyncio.sleep(0.05)  # the batch is now waiting for Redis
            for batch in list(script._batching._running):
                batch.cancel()
            _, pending = await asyncio.wait(calls, timeout=10)
        finally:
            sync_redis.execute_command("CLIENT", "UNPAUSE")
        assert not pending
        assert all(isinstance(c.exception(), RedisConnectionError) for c in calls)
    finally:
        await client.aclose()


@pytest.mark.parametrize("pipeline", ["script", "commands"])
async def test_a_batch_cancelled_before_it_started_fails_its_calls_and_the_next_ones_go(
        aredis: redis.asyncio.Redis, pipeline: str) -> None:
    """Shutdown may cancel a batch's task before its first step: its calls never went out.
    They fail at once, and calls made afterwards get a batch of their own."""
    script = PipelinedScript(aredis, ECHO)
    commands = AutoPipeline(aredis)

    def call(i: int) -> asyncio.Future[Any]:
        if pipeline == "script":
            return script(["runs"], ["c", i])
        return commands([("ECHO", f"c{i}")])

    batching = script._batching if pipeline == "script" else commands._batching
    calls = [call(i) for i in range(3)]
    [starting] = batching._running
    starting.cancel()  # before the loop ran it
    _, pending = await asyncio.wait(calls, timeout=10)
    assert not pending
    assert all(isinstance(c.exception(), RedisConnectionError) for c in calls)
    assert await call(9) == ([b"c", b"9"] if pipeline == "script" else [b"c9"])


async def test_read_hashes_gives_each_hash_or_nothing_and_raises_a_wrong_type(
        aredis: redis.asyncio.Redis) -> None:
    await aredis.hset("h1", mapping={"a": "1", "é": "ü"})
    await aredis.set("not-a-hash", "x")
    commands = AutoPipeline(aredis)
    assert await read_hashes(commands, ["h1", "missing"]) == [{"a": "1", "é": "ü"}, {}]
    assert await read_hashes(commands, []) == []
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await read_hashes(commands, ["h1", "not-a-hash"])
