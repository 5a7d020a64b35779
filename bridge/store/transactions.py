"""One MULTI/EXEC sent as one write on a held connection, and never sent twice.

redis-py's transaction pipeline packs each command in Python, and on a connection error its
Retry sends the whole MULTI/EXEC again. That suits idempotent writes, not counters: an EXEC
that ran but whose reply was lost would count twice. Here a lost connection raises. The
caller, a change-log consumer, gets its batch again and skips what the EXEC did write (the
figures it saves in the same transaction remember the last change applied).

The commands are packed in C (hiredis) and the connection is one the pipelines hold
between their batches (pipelining.HeldConnections): the reports consumer's transaction
cost the relay more CPU than reading the changes it counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.store.pipelining import NO_READ_TIMER, Arg, HeldConnections, pack


async def transaction(connections: HeldConnections, commands: Sequence[Sequence[Arg]]
                      ) -> list[Any]:
    """EXEC's replies, in order. A command Redis refuses (when queued, or when it runs)
    raises its ResponseError; with a refusal at queue time nothing ran (EXECABORT)."""
    if not commands:
        return []
    packed = [pack("MULTI"), *(pack(*command) for command in commands), pack("EXEC")]
    connection = await connections.take()
    refused: list[ResponseError] = []
    replies: Any = None
    try:
        async with asyncio.timeout(connections.timeout_s):
            await connection.send_packed_command(packed)
            # MULTI's OK, a QUEUED per command, then EXEC's replies. Every one is read, an
            # error reply included, so the connection stays in step for the next caller.
            for _ in packed:
                try:
                    replies = await connection.read_response(timeout=NO_READ_TIMER)
                except ResponseError as exc:
                    refused.append(exc)
    except TimeoutError:  # the connection may hold unread replies
        await connection.disconnect(nowait=True)
        await connections.give_back(connection)
        raise RedisTimeoutError(f"no reply from Redis within {connections.timeout_s:g} s"
                                ) from None
    except BaseException:  # lost (redis-py disconnected it) or cancelled half-way
        await connection.disconnect(nowait=True)
        await connections.give_back(connection)
        raise
    await connections.keep(connection)
    if refused:  # refused when queued (then EXEC answered EXECABORT: nothing ran)
        raise refused[0]
    assert isinstance(replies, list)
    for reply in replies:
        if isinstance(reply, ResponseError):  # failed when it ran; the others ran
            raise reply
    return replies
