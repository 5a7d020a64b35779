"""Lua scripts called by their SHA1, off the hot path (the routing script has its own,
pipelined: pipelining.PipelinedScript).

redis-py's Script answers NOSCRIPT (Redis restarted or failed over, SCRIPT FLUSH) with a
SCRIPT LOAD and a second EVALSHA: two commands, and a flush between them, or a dropped
connection whose retry waits out a backoff while another flush lands, fails the call with
NoScriptError. A job failing that way burns one of its crash retries (CI's connection-chaos
test saw the unsent-sends sweep fail so). `Script` answers NOSCRIPT with EVAL and the
script's body instead: one command, which cannot miss, and which caches the script again
for the next EVALSHA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

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
