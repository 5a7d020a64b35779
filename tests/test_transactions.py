"""transaction(): MULTI/EXEC in one write on a held connection, against a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.store.pipelining import HeldConnections
from bridge.store.transactions import transaction


async def test_the_commands_run_together_and_each_reply_comes_back(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    held = HeldConnections.of(aredis)
    replies = await transaction(held, [("INCRBY", "n", 5), ("HSET", "h", "a", "1", "b", "2"),
                                       ("EXPIRE", "h", 60), ("GET", "n")])
    assert replies == [5, 2, 1, b"5"]
    assert sync_redis.hgetall("h") == {b"a": b"1", b"b": b"2"} and sync_redis.ttl("h") > 0
    assert await transaction(held, []) == []
    # The connection stays held for the next one.
    assert await transaction(held, [("INCR", "n")]) == [6]
    assert held.checkouts == 1


async def test_a_command_refused_when_queued_runs_nothing(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    held = HeldConnections.of(aredis)
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        await transaction(held, [("INCR", "n"), ("SET", "only-a-key")])
    assert sync_redis.get("n") is None  # EXECABORT: the INCR did not run either
    assert await transaction(held, [("INCR", "n")]) == [1]  # the connection is in step
    assert held.checkouts == 1


async def test_a_command_failing_when_it_runs_raises_its_error(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    sync_redis.hset("h", "a", "1")
    held = HeldConnections.of(aredis)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await transaction(held, [("INCR", "n"), ("INCR", "h")])
    assert sync_redis.get("n") == b"1"  # Redis runs the rest of a transaction
    assert await transaction(held, [("INCR", "n")]) == [2]


async def test_a_reply_lost_after_exec_raises_and_is_never_sent_again(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py's transaction pipeline would send MULTI/EXEC again here (its Retry): the
    counter would move twice. The caller is told instead, and the count stays one."""
    held = HeldConnections.of(aredis)
    connection = await held.take()
    await held.keep(connection)
    real = connection.read_response
    reads: list[int] = []

    async def lose_the_exec_reply(*args: Any, **kwargs: Any) -> Any:
        reply = await real(*args, **kwargs)
        reads.append(1)
        if len(reads) == 3:  # OK, QUEUED, then EXEC's reply: it ran
            raise RedisConnectionError("connection lost")
        return reply

    monkeypatch.setattr(connection, "read_response", lose_the_exec_reply)
    with pytest.raises(RedisConnectionError):
        await transaction(held, [("INCR", "counted")])
    assert sync_redis.get("counted") == b"1"
    monkeypatch.undo()
    assert await transaction(held, [("INCR", "counted")]) == [2]  # on a fresh connection
    assert held.checkouts == 2
