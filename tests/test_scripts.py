"""Scripts off the hot path, the web's and the workers' (RQ's included): a script Redis no
longer has (restart, failover, SCRIPT FLUSH) still runs, in one command, however often the
cache is flushed."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
import redis.client
from redis.commands.core import AsyncScript

from bridge.store import connection
from bridge.store.scripts import Script
from tests.conftest import make_settings
from workers.scheduler import BridgeScheduler

ECHO = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"


async def test_a_script_redis_does_not_have_runs_and_is_cached_again(
        aredis: redis.asyncio.Redis) -> None:
    script = Script(aredis, ECHO)
    await aredis.script_flush()
    assert await script(keys=["scripts:a"], args=["one"]) == b"one"
    assert await aredis.get("scripts:a") == b"one"
    assert await aredis.script_exists(script.sha) == [True]
    assert await script(keys=["scripts:a"], args=["two"]) == b"two"  # by its SHA1 now


@pytest.mark.parametrize("implementation", ["bridge", "redis-py"])
async def test_a_flush_before_every_call_fails_only_redis_pys_script(
        aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch,
        implementation: str) -> None:
    """The flush lands between the NOSCRIPT and the next call each time, as under a
    flapping failover: redis-py's SCRIPT LOAD + EVALSHA misses, our EVAL cannot."""
    evalsha = aredis.evalsha

    async def flushed_first(*args: Any) -> Any:
        await aredis.script_flush()
        return await evalsha(*args)

    monkeypatch.setattr(aredis, "evalsha", flushed_first)
    if implementation == "bridge":
        assert await Script(aredis, ECHO)(keys=["scripts:b"], args=["x"]) == b"x"
    else:
        script: AsyncScript = aredis.register_script(ECHO)
        with pytest.raises(redis.exceptions.NoScriptError):
            await script(keys=["scripts:b"], args=["x"])


async def test_an_error_in_the_script_is_raised_not_retried(
        aredis: redis.asyncio.Redis) -> None:
    script = Script(aredis, "redis.call('INCR', KEYS[1]) return redis.error_reply('no')")
    await aredis.script_flush()
    with pytest.raises(redis.exceptions.ResponseError, match="no"):
        await script(keys=["scripts:c"])
    assert await aredis.get("scripts:c") == b"1"  # ran once, through EVAL


# ---------------------------------------------------------------- the workers' client


def _workers_client(redis_url: str) -> redis.Redis:
    return connection.sync_redis(make_settings(redis_url), retry=connection.RIDE_OUT)


@pytest.mark.parametrize("implementation", ["bridge", "redis-py"])
def test_a_flush_before_every_synchronous_call_fails_only_redis_pys_script(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, implementation: str) -> None:
    client = _workers_client(redis_url) if implementation == "bridge" \
        else redis.Redis.from_url(redis_url)
    evalsha = client.evalsha

    def flushed_first(*args: Any) -> Any:
        client.script_flush()
        return evalsha(*args)

    monkeypatch.setattr(client, "evalsha", flushed_first)
    script = client.register_script(ECHO)
    try:
        if implementation == "bridge":
            assert script(keys=["scripts:d"], args=["y"]) == b"y"
            assert client.get("scripts:d") == b"y"
        else:
            with pytest.raises(redis.exceptions.NoScriptError):
                script(keys=["scripts:d"], args=["y"])
    finally:
        client.close()


@pytest.mark.parametrize("implementation", ["bridge", "redis-py"])
def test_rq_schedulers_heartbeat_survives_a_redis_that_lost_its_scripts(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        implementation: str) -> None:
    """RQ's scheduler refreshes its locks with a script in a pipeline. redis-py loads a
    pipeline's scripts before the first try only: a retry after a dropped connection finds
    a Redis that restarted (or was flushed) without them. Here the load finds nothing to
    do, as on that retry; with redis-py's script the scheduler process died of it."""
    client = _workers_client(redis_url) if implementation == "bridge" \
        else redis.Redis.from_url(redis_url)
    scheduler = BridgeScheduler(["scripts-q"], connection=client)
    try:
        assert scheduler.acquire_locks() == {"scripts-q"}
        lock = scheduler.get_locking_key("scripts-q")
        client.expire(lock, 5)
        client.script_flush()
        monkeypatch.setattr(redis.client.Pipeline, "load_scripts", lambda self: None)
        if implementation == "bridge":
            scheduler.heartbeat()
            assert scheduler.acquired_locks == {"scripts-q"}
            assert client.ttl(lock) > 5  # refreshed by the script
            assert client.get(lock) == scheduler.name.encode()
        else:
            with pytest.raises(redis.exceptions.NoScriptError):
                scheduler.heartbeat()
    finally:
        scheduler.connection.close()
        client.close()

