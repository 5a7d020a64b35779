"""transaction(): MULTI/EXEC in one write on the pool's link, against a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.store import link as link_module
from bridge.store.link import RedisLink
from bridge.store.transactions import transaction


async def test_the_commands_run_together_and_each_reply_comes_back(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    link = RedisLink.of(aredis)
    replies = await transaction(link, [("INCRBY", "n", 5), ("HSET", "h", "a", "1", "b", "2"),
                                       ("EXPIRE", "h", 60), ("GET", "n")])
    assert replies == [5, 2, 1, b"5"]
    assert sync_redis.hgetall("h") == {b"a": b"1", b"b": b"2"} and sync_redis.ttl("h") > 0
    assert await transaction(link, []) == []
    # The connection stays open for the next one.
    assert await transaction(link, [("INCR", "n")]) == [6]
    assert link.opened == 1


async def test_a_command_refused_when_queued_runs_nothing(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    link = RedisLink.of(aredis)
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        await transaction(link, [("INCR", "n"), ("SET", "only-a-key")])
    assert sync_redis.get("n") is None  # EXECABORT: the INCR did not run either
    assert await transaction(link, [("INCR", "n")]) == [1]  # the connection is in step
    assert link.opened == 1


async def test_a_command_failing_when_it_runs_raises_its_error(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    sync_redis.hset("h", "a", "1")
    link = RedisLink.of(aredis)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await transaction(link, [("INCR", "n"), ("INCR", "h")])
    assert sync_redis.get("n") == b"1"  # Redis runs the rest of a transaction
    assert await transaction(link, [("INCR", "n")]) == [2]


async def test_a_reply_lost_after_exec_raises_and_is_never_sent_again(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py's transaction pipeline would send MULTI/EXEC again here (its Retry): the
    counter would move twice. The caller is told instead, and the count stays one."""
    link = RedisLink.of(aredis)
    assert await transaction(link, [("INCR", "warm")]) == [1]
    wire = link._wire
    assert wire is not None

    class LoseTheExecReply:
        """hiredis's reader, except that the connection is lost when EXEC's reply (the
        third: OK, QUEUED, then EXEC's) has come: the transaction ran."""

        def __init__(self, reader: Any) -> None:
            self.reader, self.replies = reader, 0

        def feed(self, data: bytes) -> None:
            self.reader.feed(data)

        def gets(self) -> Any:
            reply = self.reader.gets()
            if reply is not link_module._NOT_YET:
                self.replies += 1
                if self.replies == 3:
                    wire.drop(RedisConnectionError("connection lost"))
                    return link_module._NOT_YET
            return reply

    monkeypatch.setattr(wire, "_reader", LoseTheExecReply(wire._reader))
    with pytest.raises(RedisConnectionError):
        await transaction(link, [("INCR", "counted")])
    assert sync_redis.get("counted") == b"1"
    assert await transaction(link, [("INCR", "counted")]) == [2]  # on a fresh connection
    assert link.opened == 2
