"""Lua scripts called by their SHA1, off the hot path (the routing script has its own,
pipelined: pipelining.PipelinedScript).

redis-py's Script answers NOSCRIPT (Redis restarted or failed over, SCRIPT FLUSH) with a
SCRIPT LOAD and a second EVALSHA: two commands, and a flush between them, or a dropped
connection whose retry waits out a backoff while another flush lands, fails the call with
NoScriptError. A job failing that way burns one of its crash retries (CI's connection-chaos
test saw the unsent-sends sweep fail so). `Script` answers NOSCRIPT with EVAL and the
script's body instead: one command, which cannot miss, and which caches the script again
for the next EVALSHA.

The workers' synchronous connection (connection.sync_redis) hands RQ the same kind of
script (`EvalOnNoScript`, from its `register_script`). RQ's scheduler refreshes its locks
with a script inside a pipeline every second: redis-py loads the pipeline's scripts once,
before the first try, and a retry after a dropped connection then ran EVALSHA on a Redis
that had lost its scripts (a restart, SCRIPT FLUSH). The scheduler process died of the
NoScriptError, and the worker's next maintenance pass, starting it again with the same
kind of call, could die of it too: the worker process quit and was restarted
(tests/faults/test_connection_chaos.py, in CI). In a pipeline the script is sent with EVAL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.client
import redis.commands.core
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from bridge.store.pipelining import Arg


class Script:
    def __init__(self, client: Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(self.source, len(keys), *keys, *args)


class EvalOnNoScript(redis.commands.core.Script):  # type: ignore[misc]
    """redis-py's synchronous Script, answering NOSCRIPT with EVAL, and queued in a
    pipeline as EVAL (a pipeline's retry cannot load scripts again). The script's body is
    a few hundred bytes: what RQ's scheduler sends once a second per lock."""

    def __call__(self, keys: Sequence[Any] | None = None, args: Sequence[Any] | None = None,
                 client: Any = None) -> Any:
        client = self.registered_client if client is None else client
        arguments = (*(keys or ()), *(args or ()))
        count = len(keys or ())
        if isinstance(client, redis.client.Pipeline):
            return client.eval(self.script, count, *arguments)
        try:
            return client.evalsha(self.sha, count, *arguments)
        except NoScriptError:
            return client.eval(self.script, count, *arguments)
