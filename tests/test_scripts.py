"""Scripts off the hot path: a script Redis no longer has (restart, failover, SCRIPT FLUSH)
still runs, in one command, however often the cache is flushed."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from redis.commands.core import AsyncScript

from bridge.store.scripts import Script

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
