"""One MULTI/EXEC sent as one write, and never sent twice.

redis-py's transaction pipeline packs each command in Python, and on a connection error its
Retry sends the whole MULTI/EXEC again. That suits idempotent writes, not counters: an EXEC
that ran but whose reply was lost would count twice. Here a lost connection raises. The
caller, a change-log consumer, gets its batch again and skips what the EXEC did write (the
figures it saves in the same transaction remember the last change applied).

The commands are packed in C (hiredis) and go on the pool's link (link.py) as one group:
nothing else is written between MULTI and EXEC, so other calls sharing the link never
land inside the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from bridge.store.link import RedisLink
from bridge.store.pipelining import Arg, pack


async def transaction(link: RedisLink, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """EXEC's replies, in order. A command Redis refuses (when queued, or when it runs)
    raises its ResponseError; with a refusal at queue time nothing ran (EXECABORT)."""
    if not commands:
        return []
    packed = [pack("MULTI"), *(pack(*command) for command in commands), pack("EXEC")]
    # MULTI's OK, a QUEUED per command (or the error that refused it), then EXEC's replies
    # (or EXECABORT when a command was refused: then nothing ran).
    *queued, replies = await link.call(packed)
    for reply in queued:
        if isinstance(reply, ResponseError):
            raise reply
    if isinstance(replies, ResponseError):
        raise replies
    assert isinstance(replies, list)
    for reply in replies:
        if isinstance(reply, ResponseError):  # failed when it ran; the others ran
            raise reply
    return replies
