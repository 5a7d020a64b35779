"""The hot path's Redis calls, auto-pipelined on the pool's link (link.py): the routing
script, and groups of plain commands (index writes, ticket reads, ticket-id reservations).

Calls made while others are in flight share one write, and their replies come back as
they are read; under load a write holds every call made in the same loop iteration, and
when idle a call is written at once. Commands are packed in C (hiredis).

A pipeline is not a transaction and needs none: each script still runs atomically on its
own, and every routing script is idempotent on its MessageSid (the `seen` set), so running
one twice stores its message once.

Failures behave as for a single call:
- no reply within the pool's socket timeout: redis-py's TimeoutError (answered 503), not
  sent again (Redis may be busy running it);
- a lost connection: sent again once, on a new connection, after RETRY_DELAY_S (a script
  that ran but whose reply was lost answers "duplicate" the second time); a second loss is
  redis-py's ConnectionError (503);
- NOSCRIPT (Redis restarted, SCRIPT FLUSH): the call did not run; it goes again right
  behind a SCRIPT LOAD, in the same write;
- an error reply fails only its own call;
- a caller that stops waiting (cancelled) leaves the others' calls as they were.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from bridge.store.link import RedisLink

# Before the single retry after a lost connection (as redis-py's backoff did).
RETRY_DELAY_S = 0.02

Arg = str | bytes | int | float
T = TypeVar("T")


def pack(*args: Arg) -> bytes:
    """One command in RESP, packed by hiredis in C."""
    # hiredis's stub types the argument as a 1-tuple; any length is accepted.
    packed: bytes = pack_command(args)  # type: ignore[arg-type]
    return packed


async def _once_more_if_lost(send: Callable[[], Awaitable[T]]) -> T:
    try:
        return await send()
    except RedisConnectionError:
        await asyncio.sleep(RETRY_DELAY_S)
        return await send()


class PipelinedScript:
    """A registered Lua script whose concurrent calls share round trips to Redis."""

    def __init__(self, client: Redis, source: str) -> None:
        self.link = RedisLink.of(client)
        self._source = source.encode()
        self._sha = hashlib.sha1(self._source).hexdigest()
        self.calls = 0  # since start (tests and benchmarks)

    @property
    def sha(self) -> str:
        return self._sha

    async def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """One EVALSHA: the script's reply, or its error reply raised. Packing comes first,
        so an argument Redis cannot take fails before any I/O."""
        command = pack("EVALSHA", self._sha, len(keys), *keys, *args)
        self.calls += 1
        reply = await _once_more_if_lost(lambda: self._run(command))
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _run(self, command: bytes) -> Any:
        [reply] = await self.link.call((command,))
        if isinstance(reply, NoScriptError):  # it did not run
            loaded, reply = await self.link.call((pack("SCRIPT", "LOAD", self._source),
                                                  command))
            if isinstance(loaded, Exception):
                return loaded
            if isinstance(reply, NoScriptError):
                return NoScriptError("NOSCRIPT even after SCRIPT LOAD")
        return reply


class AutoPipeline:
    """Groups of plain commands whose concurrent calls share round trips, as PipelinedScript
    does for the routing script: the index update after a new ticket is a handful of
    commands, and through redis-py's pipeline object it cost more of the web process's CPU
    than the routing itself (packing in Python, a pool checkout per request).

    Only for commands that are safe to send twice (ZADD, ZREM, HSET, HMGET, INCRBY of a
    reservation whose ids may be skipped): a group whose connection was lost is sent again
    once, whole. A group is not a transaction: each command runs on its own, in order.
    Error replies come back in the list, as exception objects."""

    def __init__(self, client: Redis) -> None:
        self.link = RedisLink.of(client)

    async def __call__(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        packed = [pack(*command) for command in commands]
        if not packed:
            return []
        return await _once_more_if_lost(lambda: self.link.call(packed))

    async def checked(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """As a call, for a caller that has no use for part of the replies: the first error
        reply is raised (the commands after it still ran)."""
        replies = await self(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
