"""Auto-pipelining for the hot Lua script: the calls made in one event-loop iteration go to
Redis together, as one write on one pooled connection, and their replies are read back in
order.

Why: every webhook is one routing-script call. Through redis-py's per-command path each
call pays a pool checkout, argument packing in Python, a socket write behind a timer task
and a timed read: ~100 µs of the web process's CPU per webhook (py-spy, `make bench`), most
of what a webhook cost. Here a call costs a command packed in C (hiredis) and one parsed
reply; the checkout, the write and the timers are paid once per batch. Under load a batch
holds every webhook that arrived in the same loop iteration; when idle, a batch of one
costs about what a plain call did.

A pipeline is not a transaction and needs none: each script still runs atomically on its
own, and every routing script is idempotent on its MessageSid (the `seen` set), so running
one twice stores its message once.

Connections: a batch takes one the last batch left (HeldConnections), else one from the
client's pool, and leaves it for the next batch rather than giving it back. A checkout and
a check-in cost ~50 µs of CPU each time, more than the rest of a lone batch's round trip
(tests/test_pipelining.py counts the checkouts); a few connections stay out of the pool
that way (at most MAX_HELD per connection pool, and only as many as batches ran at once). A
connection that failed goes back to the pool, which checks it at its next checkout, and
with it the held ones (Redis may have dropped them all).

Failures behave as for a single call, per batch:
- the connection comes from the held ones or the client's pool, waiting at most the
  pool's timeout (then redis-py's "No connection available" ConnectionError, answered
  503);
- each attempt's send and replies run under the connection's socket timeout (redis
  TimeoutError, 503; the pool wait and the connect have their own limits);
- NOSCRIPT (Redis restarted, SCRIPT FLUSH): the script is loaded and the calls that got
  NOSCRIPT, which did not run, are sent again;
- a connection error is retried once on a fresh connection for the calls still without a
  reply (a script that ran but whose reply was lost answers "duplicate" the second time);
- a caller that stops waiting (cancelled) does not cancel the batch: the others' replies
  still arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Before the single retry after a connection error (as redis-py's backoff did).
RETRY_DELAY_S = 0.02
DEFAULT_TIMEOUT_S = 5.0
# Replies are read without a per-read timer: the whole batch runs under one deadline.
NO_READ_TIMER = float("inf")
# Connections the pipelines of one pool keep between batches.
MAX_HELD = 4
_ON_POOL = "_bridge_held_connections"

Arg = str | bytes | int | float
Command = TypeVar("Command")
Reply = TypeVar("Reply")


class HeldConnections:
    """The pool's connections its pipelines keep between their batches: one set per pool,
    shared by every pipeline on it (a process that builds many stores on one client keeps
    no more connections out of the pool than one that builds one)."""

    @classmethod
    def of(cls, client: Redis) -> HeldConnections:
        # Kept on the pool itself, so it goes with the pool (redis-py's connections refer
        # to their pool: a registry beside it would keep every pool ever used alive).
        pool = client.connection_pool
        held: HeldConnections | None = getattr(pool, _ON_POOL, None)
        if held is None:
            held = cls(client)
            setattr(pool, _ON_POOL, held)
        return held

    def __init__(self, client: Redis) -> None:
        self.pool = client.connection_pool
        timeout_s = self.pool.connection_kwargs.get("socket_timeout")
        self.timeout_s = float(timeout_s) if timeout_s else DEFAULT_TIMEOUT_S
        self._idle: list[Any] = []
        self.checkouts = 0  # from the pool (tests)

    async def take(self) -> Any:
        if self._idle:
            return self._idle.pop()
        self.checkouts += 1
        connection = await self.pool.get_connection()
        # While held, writes go without redis-py's own timer (a task per write, through
        # asyncio.wait_for): every batch runs under its deadline. Restored on return.
        connection.socket_timeout = None
        return connection

    async def keep(self, connection: Any) -> None:
        """After a batch that went well: left for the next one."""
        if len(self._idle) < MAX_HELD:
            self._idle.append(connection)
        else:
            await self._release(connection)

    async def give_back(self, connection: Any) -> None:
        """After a failed batch: the connection, and the held ones, go back to the pool."""
        idle, self._idle = self._idle, []
        for held in (connection, *idle):
            await self._release(held)

    async def _release(self, connection: Any) -> None:
        connection.socket_timeout = self.pool.connection_kwargs.get("socket_timeout")
        await self.pool.release(connection)


class _Pending(Generic[Command, Reply]):
    """One call: what it sends, and the future its caller awaits."""

    __slots__ = ("command", "future")

    def __init__(self, command: Command, future: asyncio.Future[Reply]) -> None:
        self.command = command
        self.future = future


class _Batching(Generic[Command, Reply]):
    """The calls waiting for the next batch, and the batch tasks running.

    A batch's task starts at the first call it holds, and takes the calls waiting when its
    first step runs, in the next loop iteration: every call made in this iteration by
    then. (It was started from a callback scheduled for the next iteration, so its send
    went out an iteration later: under load, Redis then waited for the web process while
    the web process waited for Redis, a lock-step that left each of them idle.)"""

    def __init__(self, run: Callable[[list[_Pending[Command, Reply]]], Awaitable[None]]
                 ) -> None:
        self._run = run
        self._waiting: list[_Pending[Command, Reply]] = []
        self._next: asyncio.Task[None] | None = None  # will take the waiting calls
        self._running: set[asyncio.Task[None]] = set()

    def add(self, command: Command) -> asyncio.Future[Reply]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting.append(_Pending(command, future))
        if self._next is None:
            task = self._next = loop.create_task(self._take())
            self._running.add(task)
            task.add_done_callback(self._done)
        return future

    async def _take(self) -> None:
        self._next = None
        batch, self._waiting = self._waiting, []
        await self._run(batch)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task is self._next:  # cancelled before its first step: its calls never went
            self._next = None
            batch, self._waiting = self._waiting, []
            _fail_unanswered(batch, {}, RedisConnectionError(
                "the Redis batch was cancelled (shutting down)"))


class PipelinedScript:
    """A registered Lua script whose concurrent calls share round trips to Redis."""

    def __init__(self, client: Redis, source: str) -> None:
        self.connections = HeldConnections.of(client)
        self._source = source.encode()
        self._sha = hashlib.sha1(self._source).hexdigest()
        self._timeout_s = self.connections.timeout_s
        self._batching: _Batching[bytes, Any] = _Batching(self._run)
        # Totals since start (for tests and benchmarks: calls / batches is the batching).
        self.calls = 0
        self.batches = 0

    @property
    def sha(self) -> str:
        return self._sha

    def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue one EVALSHA; the future resolves to the script's reply. Packing happens
        here, so an argument Redis cannot take fails in the caller, before any I/O."""
        return self._batching.add(pack("EVALSHA", self._sha, len(keys), *keys, *args))

    async def _run(self, batch: list[_Pending[bytes, Any]]) -> None:
        self.calls += len(batch)
        self.batches += 1
        replies: dict[int, Any] = {}
        try:
            await self._execute([p.command for p in batch], replies)
        except Exception as exc:
            _fail_unanswered(batch, replies, exc)
        except BaseException:  # cancelled (shutdown): nobody may be left waiting
            _fail_unanswered(batch, replies, RedisConnectionError(
                "the Redis batch was cancelled (shutting down)"))
            raise
        finally:
            for i, reply in replies.items():
                future = batch[i].future
                if future.done():
                    continue
                if isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _execute(self, commands: list[bytes], replies: dict[int, Any]) -> None:
        todo = list(range(len(commands)))
        loaded = retried = False
        connections = self.connections
        while todo:
            connection = await connections.take()
            try:
                async with asyncio.timeout(self._timeout_s) as deadline:
                    # NOSCRIPT replies are kept apart: those calls did not run.
                    missing = await _roundtrip(connection, todo, commands, replies, deadline)
                    if missing and not loaded:
                        await connection.send_packed_command(
                            pack("SCRIPT", "LOAD", self._source))
                        await connection.read_response(timeout=NO_READ_TIMER)
                        loaded = True
                        todo = missing
                        await connections.keep(connection)
                        continue
                    for i in missing:  # NOSCRIPT right after loading it: give up on these
                        replies[i] = NoScriptError("NOSCRIPT even after SCRIPT LOAD")
            except TimeoutError:  # our deadline: the connection may hold unread replies
                await connection.disconnect(nowait=True)
                await connections.give_back(connection)
                raise RedisTimeoutError(f"no reply from Redis within {self._timeout_s:g} s"
                                        ) from None
            except RedisConnectionError:  # redis-py has disconnected it
                await connections.give_back(connection)
                if retried:
                    raise
                # Once more, on a fresh connection (maybe to a restarted Redis: the script
                # may need loading again), for every call still without a reply.
                retried = True
                loaded = False
                todo = [i for i in todo if i not in replies]
            except BaseException:
                await connections.give_back(connection)
                raise
            else:
                await connections.keep(connection)
                return
            await asyncio.sleep(RETRY_DELAY_S)


def _fail_unanswered(batch: Sequence[_Pending[Any, Any]], replies: dict[int, Any],
                     exc: BaseException) -> None:
    for i, pending in enumerate(batch):
        if i not in replies and not pending.future.done():
            pending.future.set_exception(_fresh(exc))


def pack(*args: Arg) -> bytes:
    """One command in RESP, packed by hiredis in C."""
    # hiredis's stub types the argument as a 1-tuple; any length is accepted.
    packed: bytes = pack_command(args)  # type: ignore[arg-type]
    return packed


async def _roundtrip(connection: Any, todo: list[int], commands: list[bytes],
                     replies: dict[int, Any], deadline: asyncio.Timeout) -> list[int]:
    """Send the commands at `todo` in one write; store each reply (or its error) as it is
    read, so the replies already read survive a connection lost half-way. Returns the
    calls answered NOSCRIPT (not stored: they did not run)."""
    await connection.send_packed_command([commands[i] for i in todo])
    if deadline.expired():
        # On Python 3.11, the wait_for inside send_packed_command can swallow the deadline's
        # cancellation when the write completes in the same loop iteration.
        raise TimeoutError
    missing: list[int] = []
    for i in todo:
        try:
            replies[i] = await connection.read_response(timeout=NO_READ_TIMER)
        except NoScriptError:
            missing.append(i)
        except ResponseError as exc:  # an error reply: the connection is still in step
            replies[i] = exc
    return missing


def _fresh(exc: BaseException) -> BaseException:
    """One exception object per waiting caller (tracebacks are per raise)."""
    try:
        fresh: BaseException = type(exc)(*exc.args)
    except Exception:
        return exc
    return fresh


class AutoPipeline:
    """Groups of plain commands whose concurrent calls share round trips, as PipelinedScript
    does for the routing script: the index update after a new ticket is a handful of
    commands, and through redis-py's pipeline object it cost more of the web process's CPU
    than the routing itself (packing in Python, a pool checkout per request).

    Only for commands that are safe to send twice (ZADD, ZREM, HSET, HMGET): a group whose
    connection was lost is sent again once, whole. A group is not a transaction: each
    command runs on its own, in order."""

    def __init__(self, client: Redis) -> None:
        self.connections = HeldConnections.of(client)
        self._timeout_s = self.connections.timeout_s
        self._batching: _Batching[list[bytes], list[Any]] = _Batching(self._run)

    def __call__(self, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        return self._batching.add([pack(*c) for c in commands])

    async def _run(self, batch: list[_Pending[list[bytes], list[Any]]]) -> None:
        commands = [c for pending in batch for c in pending.command]
        replies: dict[int, Any] = {}
        try:
            connections = self.connections
            for attempt in range(2):
                connection = await connections.take()
                try:
                    async with asyncio.timeout(self._timeout_s) as deadline:
                        todo = [i for i in range(len(commands)) if i not in replies]
                        await _read_all(connection, todo, commands, replies, deadline)
                except TimeoutError:
                    await connection.disconnect(nowait=True)
                    await connections.give_back(connection)
                    raise RedisTimeoutError(
                        f"no reply from Redis within {self._timeout_s:g} s") from None
                except RedisConnectionError:
                    await connections.give_back(connection)
                    if attempt:
                        raise
                except BaseException:
                    await connections.give_back(connection)
                    raise
                else:
                    await connections.keep(connection)
                    break
                await asyncio.sleep(RETRY_DELAY_S)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RedisConnectionError(
                "the Redis batch was cancelled (shutting down)")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(_fresh(error))
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for pending in batch:
            end = start + len(pending.command)
            if not pending.future.done():
                pending.future.set_result([replies[i] for i in range(start, end)])
            start = end


async def _read_all(connection: Any, todo: list[int], commands: list[bytes],
                    replies: dict[int, Any], deadline: asyncio.Timeout) -> None:
    await connection.send_packed_command([commands[i] for i in todo])
    if deadline.expired():  # see _roundtrip
        raise TimeoutError
    for i in todo:
        try:
            replies[i] = await connection.read_response(timeout=NO_READ_TIMER)
        except ResponseError as exc:
            replies[i] = exc
