"""What a worker process needs to run jobs, built once per process.

RQ jobs are synchronous functions, while the ticket store is asyncio code shared with the web
process. Each process keeps one `asyncio.Runner` (one event loop) and runs every job's async
part on it, so the async Redis pool and the HTTP connection pool are reused from job to job
(asyncio.run would make a loop per call, and redis.asyncio connections cannot move between
loops).

The forking worker (`python -m workers`) runs each job in a fresh child process: the cache is
keyed by process id, so a child never uses sockets or an event loop inherited from its parent.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis
import redis.asyncio

from bridge.store.connection import RIDE_OUT, async_redis, sync_redis
from bridge.store.outbox import Outbox
from bridge.store.tickets import TicketStore
from config.settings import Settings
from workers.outbound import OutboundService, RetryPolicy
from workers.senders import Sender, build_sender

T = TypeVar("T")


class WorkerConfigError(RuntimeError):
    """The worker cannot start: the message says what to set."""


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        sender: Sender | None = None,
    ) -> None:
        if not settings.redis_url:
            raise WorkerConfigError(
                "REDIS_URL is not set: workers need the Redis the web process uses "
                "(`bridge run` starts an embedded one and passes its URL)"
            )
        self.settings = settings
        self.pid = os.getpid()
        self._runner = asyncio.Runner()
        # Jobs ride out a Redis restart: what they did (a message Twilio accepted) must
        # still be recorded (bridge.store.connection).
        self.redis: redis.Redis = sync_redis(settings, retry=RIDE_OUT)
        self.aredis: redis.asyncio.Redis = async_redis(settings, retry=RIDE_OUT)
        self.store = TicketStore(self.aredis, contact_key=settings.contact_key_bytes,
                                 dedupe_ttl_s=settings.dedupe_ttl_s)
        self.outbox = Outbox(self.aredis)
        self.sender: Sender = sender or build_sender(settings, self.outbox)
        self.outbound = OutboundService(self.store, self.sender, policy=policy or RetryPolicy())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one job's async part on this process's event loop."""
        return self._runner.run(coro)

    def close(self) -> None:
        async def aclose() -> None:
            await self.sender.aclose()
            await self.aredis.aclose()

        try:
            self._runner.run(aclose())
        finally:
            self._runner.close()
            self.redis.close()


_lock = threading.Lock()
_settings: Settings | None = None
_current: Runtime | None = None


def preload(settings: Settings) -> None:
    """Warm the parent process up before it starts forking one child per job.

    Building a runtime imports what twilio-python, httpx and redis-py load lazily and
    loads the CA bundle (together ~300 ms); done once here, every child inherits it. The
    throwaway runtime is closed before any connection is opened, so no socket is shared
    with the children. (The job modules, workers.tasks, are imported by `python -m workers`
    itself: they import this module, not the other way round.)
    """
    import twilio.rest.api.v2010.account.message  # noqa: F401  (twilio imports it lazily)

    from workers.twilio_client import tls_context

    tls_context()
    Runtime(settings).close()


def configure(settings: Settings) -> None:
    """Called once by `python -m workers` with the settings it read at start-up; forked
    children inherit them, so the environment is read once per worker."""
    global _settings
    _settings = settings


def current() -> Runtime:
    """This process's runtime, built on first use."""
    global _current, _settings
    with _lock:
        if _current is None or _current.pid != os.getpid():
            # After a fork the parent's runtime (if any) belongs to the parent: drop it
            # without closing, closing would shut sockets the parent still uses.
            if _settings is None:
                _settings = Settings.from_env()
            _current = Runtime(_settings)
        return _current


def install(runtime: Runtime | None) -> Runtime | None:
    """Tests and benchmarks: use this runtime (None: back to building one). Returns the
    previous one, which the caller closes if it owns it."""
    global _current
    with _lock:
        previous, _current = _current, runtime
        return previous
