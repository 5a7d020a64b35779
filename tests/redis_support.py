"""Redis test helpers shared by the link and pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def writes_paused(admin: redis.Redis, ms: int) -> Iterator[None]:
    """Redis answers no write command (EVALSHA included) for `ms`, or until the block ends:
    a Redis that stopped answering, as the client sees it."""
    admin.execute_command("CLIENT", "PAUSE", str(ms), "WRITE")
    try:
        yield
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
