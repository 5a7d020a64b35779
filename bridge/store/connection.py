"""Redis clients built from Settings: an asyncio one for the web process and the jobs' store
code, a sync one for RQ.

Two retry policies, by who is waiting (redis-py retries a command on a connection error or
a timeout, reconnecting in between):

- FAIL_FAST, for the web process: a webhook that cannot reach Redis answers 503 at once and
  the provider delivers it again; redis-py 8's default for `Redis(...)` (10 retries up to
  1 s apart) would hold requests ~10 s. `Redis.from_url` has no retry at all.
- RIDE_OUT, for workers: nobody waits on a job, and a job that loses Redis halfway has
  often done something it must record (Twilio accepted the message). Retrying for ~25 s
  covers a Redis restart or a managed failover; without it, every job in flight during a
  restart failed and RQ's worker loop quit on the first error outside its dequeue
  (tests/faults/test_redis_restart_outbound.py).

A retried command may run twice when only its reply was lost. What the bridge sends through
these clients is safe to repeat: the routing script deduplicates, delivery states are HSETs,
ticket updates are WATCH transactions that re-read on a lost reply; RQ's own writes are
idempotent or guarded by the jobs (a send checks its delivery state under a lock).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from hiredis import pack_command
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer

from bridge.store.scripts import EvalOnNoScript
from config.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more tries after the first, waiting base_s * 2**n (at most cap_s) before
    the n-th. Connection errors are retried; timeouts (no answer within socket_timeout)
    only with `on_timeout`."""

    retries: int
    base_s: float
    cap_s: float
    on_timeout: bool

    def total_wait_s(self) -> float:
        return sum(min(self.cap_s, self.base_s * 2.0 ** n) for n in range(1, self.retries + 1))

    def _errors(self) -> tuple[type[Exception], ...]:
        if self.on_timeout:
            return (redis.ConnectionError, redis.TimeoutError, socket.timeout)
        return (redis.ConnectionError,)

    def sync(self) -> redis.retry.Retry:
        return redis.retry.Retry(ExponentialBackoff(cap=self.cap_s, base=self.base_s),
                                 self.retries, supported_errors=self._errors())

    def asyncio(self) -> redis.asyncio.retry.Retry:
        return redis.asyncio.retry.Retry(ExponentialBackoff(cap=self.cap_s, base=self.base_s),
                                         self.retries, supported_errors=self._errors())


# A Redis that stopped answering is not retried by a request: each try would hold it
# another socket_timeout (an agent's API call waited 20 s for its 503 that way).
FAIL_FAST = RetryPolicy(retries=1, base_s=0.02, cap_s=0.1, on_timeout=False)
RIDE_OUT = RetryPolicy(retries=15, base_s=0.1, cap_s=2.0, on_timeout=True)  # ~25 s of waits


def _ssl_kwargs(settings: Settings) -> dict[str, Any]:
    if settings.redis_url.startswith("rediss://"):
        # Heroku-style managed Redis presents a self-signed certificate: REDIS_SSL_CERT_REQS=none.
        return {"ssl_cert_reqs": settings.redis_ssl_cert_reqs}
    return {}


# redis is untyped for mypy here (pyproject: follow_imports = "skip"): hence the ignores.
class _PackedInC:
    """Commands packed by hiredis, in C; redis-py's asyncio connections pack in Python
    (redis-py 8; its sync ones use hiredis when installed). The relay names all 256 change
    log streams in every read: 516 arguments, 760 µs to pack in Python, 70-105 µs here
    (timeit), at up to 200 reads a second under load. The bytes are the same, and anything
    hiredis does not take directly (a bytearray or memoryview, or a value Redis cannot
    take, which stays a DataError before any I/O) goes through redis-py's own hiredis
    serializer (tests/test_connection.py)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if (" " in name) if isinstance(name, str) else (b" " in name):
            return self._fallback(args)  # "CLIENT SETNAME": redis-py splits the name
        try:
            return [pack_command(args)]
        except TypeError:
            return self._fallback(args)

    def _fallback(self, args: tuple[Any, ...]) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class _Connection(_PackedInC, Connection):  # type: ignore[misc]
    pass


class _SSLConnection(_PackedInC, SSLConnection):  # type: ignore[misc]
    pass


class _UnixConnection(_PackedInC, UnixDomainSocketConnection):  # type: ignore[misc]
    pass


_PACKED_IN_C: dict[type[Any], type[Any]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def async_redis(settings: Settings, url: str | None = None, *,
                retry: RetryPolicy = FAIL_FAST) -> redis.asyncio.Redis:
    """A blocking pool: under a burst, requests wait up to redis_pool_timeout_s for a
    connection and then fail (the web layer answers 503) instead of opening without bound."""
    pool = ReconnectingBlockingPool.from_url(
        url or settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        retry=retry.asyncio(),
        socket_connect_timeout=1,
        socket_timeout=5,
        health_check_interval=30,
        **_ssl_kwargs(settings),
    )
    # The URL's scheme chose the class (TCP, TLS or a unix socket); keep that choice.
    pool.connection_class = _PACKED_IN_C.get(pool.connection_class, pool.connection_class)
    return redis.asyncio.Redis(connection_pool=pool)


# Tries of a pool's check that finds a connection it just made closed already.
CHECK_TRIES = 3


class ReconnectingPool(redis.ConnectionPool):  # type: ignore[misc]
    """A pool whose check of a pooled connection survives a replacement closed at once.
    redis-py checks a connection as it leaves the pool, outside the command's retry: a
    connection the server closed is reconnected once, and if the new one is closed before
    the check reads it (a Redis restarting, a proxy dropping clients, a busy machine
    between the two steps) the ConnectionError went straight to the caller. In RQ's
    worker loop, any command but the dequeue then ended the loop (the worker process quit
    and was restarted: tests/faults/test_connection_chaos.py under a loaded CI machine),
    and in RQ's scheduler it ended the scheduler process.

    Only that case is tried again: a connect that failed has had its client's retries
    already (a Redis that is down is not waited for twice over)."""

    def ensure_connection(self, connection: Any) -> None:
        for tries_left in range(CHECK_TRIES - 1, -1, -1):
            try:
                super().ensure_connection(connection)
                return
            except redis.ConnectionError:
                if not tries_left or not connection.is_connected:
                    raise
                connection.disconnect()


class ReconnectingBlockingPool(redis.asyncio.BlockingConnectionPool):  # type: ignore[misc]
    """ReconnectingPool's check, for the asyncio clients (jobs, the relay, the web)."""

    async def ensure_connection(self, connection: Any) -> None:
        for tries_left in range(CHECK_TRIES - 1, -1, -1):
            try:
                await super().ensure_connection(connection)
                return
            except redis.ConnectionError:
                if not tries_left or not connection.is_connected:
                    raise
                await connection.disconnect()


class ScriptsSurviveFlush(redis.Redis):  # type: ignore[misc]
    """The synchronous client (workers, RQ, the CLI): its scripts run whether or not Redis
    still has them cached (scripts.EvalOnNoScript). RQ's scheduler builds its own client
    of the class it is given, so it gets this one too."""

    def register_script(self, script: str | bytes) -> EvalOnNoScript:
        return EvalOnNoScript(self, script)


def sync_redis(settings: Settings, url: str | None = None, *,
               retry: RetryPolicy = FAIL_FAST) -> redis.Redis:
    pool = ReconnectingPool.from_url(
        url or settings.redis_url,
        retry=retry.sync(),
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
        **_ssl_kwargs(settings),
    )
    return ScriptsSurviveFlush.from_pool(pool)


CLUSTER_UNSUPPORTED = (
    "REDIS_URL points at a Redis Cluster node: the bridge runs on one Redis (a primary, with "
    "replicas for failover), not on Redis Cluster yet; its keys are laid out for it (README, "
    "Production)")


def cluster_node_at(settings: Settings) -> bool:
    """Whether REDIS_URL is a Redis Cluster node (INFO cluster). Every command on another
    node's slot would fail with MOVED: the processes refuse to start instead. A Redis that
    cannot be reached now is not one (the processes ride out an outage at start)."""
    client = sync_redis(settings)
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.RedisError:
        return False
    finally:
        client.close()
