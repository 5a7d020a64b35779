"""One multiplexed connection to Redis per connection pool: the hot path's calls (the routing
script, the index writes, the ticket reads) are written on it as they come and their
replies are matched to them in order, as they arrive.

Why: a webhook's round trip through redis-py's asyncio connection (or through a batch task
reading on a pooled connection, as this module's predecessor did) costs a task step per
batch, a stream-reader wake-up per read and a chain of coroutine calls per reply. At half
the max rate webhooks arrive one by one, and a new conversation makes two lone calls. Here
a call costs its packed command, a future and a parsed reply; the replies are parsed by
hiredis straight from the socket's data, and a call's last reply resolves its future in
the same callback: 52-60 µs of CPU per lone call where the batch tasks took 115-125 µs
(process time over 3,000 sequential calls, both in the same minutes).

What it is built on:
- The connection is redis-py's: taken from the client's pool, which opened it and ran its
  handshake (AUTH, SELECT, client name, TLS) from the URL. The link then takes over its
  transport (`set_protocol`) and keeps the connection checked out for its whole life, so
  `pool.disconnect()` (shutdown) still closes it. redis-py's stream protocol is still told
  when the connection closes, so its `disconnect()` does not wait for a close that never
  comes (tests/test_link.py holds redis-py to the attribute used).
- Writes: the calls made in one loop iteration are written together at the start of the
  next, as one write (Redis reads them in one go). Writing a call at once when nothing was
  in flight saves a lone call a loop iteration, but under load it split each iteration's
  calls into two writes and two reads by Redis: 2,810 against 3,587 appends/s in one
  closed-loop run side by side, and no gain in an open loop at 850 new conversations/s.
- A reply is matched to the oldest call without one (Redis answers in order). An error
  reply is a reply: its caller gets the exception object as the value, and decides.
- Timeouts: when the oldest call has waited `timeout_s` (the pool's socket timeout) with
  no reply, the link is dropped and every call on it fails with redis-py's TimeoutError.
  One timer per link, re-armed at most once per `timeout_s`, not one per call.
- A lost or timed-out link fails its calls with redis-py's ConnectionError or TimeoutError;
  the next call opens a new one. Whether a call is sent again is its caller's decision
  (pipelining.py: the routing script and the index writes are safe to send twice).

Only for commands that answer at once: a blocking command (BLPOP, XREAD BLOCK) or a
subscription would hold up every call behind it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from hiredis import PushNotification, Reader
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

DEFAULT_TIMEOUT_S = 5.0
_ON_POOL = "_bridge_link"
_NOT_YET = object()  # hiredis: no whole reply in the buffer yet


class _Call:
    """Commands sent together, and their replies as they come."""

    __slots__ = ("expected", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, sent_at: float
                 ) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Wire(asyncio.Protocol):
    """The protocol on one connection's transport: writes calls, matches replies."""

    def __init__(self, connection: Any, timeout_s: float) -> None:
        self.connection = connection  # redis-py's; checked out of its pool while we live
        self.error: BaseException | None = None  # set once the wire is down
        self.loop = asyncio.get_running_loop()
        self.writes = 0  # since start (tests and benchmarks: calls / writes)
        self._timeout_s = timeout_s
        encoder = connection.encoder
        self._reader = Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error,
            notEnoughData=_NOT_YET,
            **({"encoding": encoder.encoding, "errors": encoder.encoding_errors}
               if encoder.decode_responses else {}))
        self._waiting: deque[_Call] = deque()
        self._unsent: list[bytes] = []
        self._flush: asyncio.Handle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        # The only redis-py internal used: the StreamWriter its connection opened.
        self._transport: asyncio.Transport = connection._writer.transport
        self._stream_protocol = self._transport.get_protocol()
        self._transport.set_protocol(self)

    def send(self, commands: Sequence[bytes]) -> asyncio.Future[list[Any]]:
        """Queue packed commands (at least one); the future resolves to their replies."""
        if self.error is not None:
            raise _fresh(self.error)
        loop = self.loop
        now = loop.time()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append(_Call(future, len(commands), now))
        self._unsent.extend(commands)
        if self._flush is None:
            self._flush = loop.call_soon(self._write_unsent)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self._timeout_s, self._watch)
        return future

    def _write_unsent(self) -> None:
        self._flush = None
        if self.error is None and self._unsent:
            unsent, self._unsent = self._unsent, []
            self.writes += 1
            self._transport.write(b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self.drop(exc)
                return
            if reply is _NOT_YET:
                return
            if isinstance(reply, PushNotification):
                # Answers no call (redis-py's maintenance notices are pushes, for one):
                # skipped. A move or a failover then shows as a lost connection.
                continue
            if not waiting:
                self.drop(InvalidResponse("Redis sent a reply nobody asked for"))
                return
            call = waiting[0]
            call.replies.append(reply)
            if len(call.replies) == call.expected:
                waiting.popleft()
                if not call.future.done():  # its caller may have stopped waiting
                    call.future.set_result(call.replies)

    def _watch(self) -> None:
        self._watchdog = None
        if self.error is not None or not self._waiting:
            return
        deadline = self._waiting[0].sent_at + self._timeout_s
        if self.loop.time() >= deadline:
            self.drop(RedisTimeoutError(f"no reply from Redis within {self._timeout_s:g} s"))
        else:
            self._watchdog = self.loop.call_at(deadline, self._watch)

    def drop(self, error: BaseException) -> None:
        """Down for good: every call still waiting fails with `error`."""
        if self.error is None:
            self.error = error
            self._transport.abort()
        for handle in (self._flush, self._watchdog):
            if handle is not None:
                handle.cancel()
        self._flush = self._watchdog = None
        self._unsent = []
        waiting, self._waiting = self._waiting, deque()
        for call in waiting:
            if not call.future.done():
                call.future.set_exception(_fresh(self.error))

    def connection_lost(self, exc: Exception | None) -> None:
        # redis-py's StreamWriter.wait_closed() waits for its own protocol to hear this.
        self._stream_protocol.connection_lost(exc)
        self.drop(RedisConnectionError(f"Connection to Redis lost: {exc}" if exc else
                                       "Connection closed by Redis"))

    def eof_received(self) -> bool | None:
        return None  # close our end too; connection_lost follows


class RedisLink:
    """The link of one connection pool: shared by every pipeline on it (kept on the pool,
    like redis-py's own connections), opened on first use and again after a loss."""

    @classmethod
    def of(cls, client: Redis) -> RedisLink:
        pool = client.connection_pool
        link: RedisLink | None = getattr(pool, _ON_POOL, None)
        if link is None:
            link = cls(client)
            setattr(pool, _ON_POOL, link)
        return link

    def __init__(self, client: Redis) -> None:
        self.pool = client.connection_pool
        timeout_s = self.pool.connection_kwargs.get("socket_timeout")
        self.timeout_s = float(timeout_s) if timeout_s else DEFAULT_TIMEOUT_S
        self.opened = 0  # wires opened since start (tests)
        self._wire: _Wire | None = None
        self._opening: asyncio.Future[_Wire] | None = None

    @property
    def writes(self) -> int:
        return self._wire.writes if self._wire is not None else 0

    async def call(self, commands: Sequence[bytes]) -> list[Any]:
        """Send packed commands in order and return their replies (error replies as
        exception objects). Raises redis-py's ConnectionError or TimeoutError when the
        connection fails before every reply came; then some of them may have run."""
        if not commands:
            return []
        wire = self._wire
        if wire is None or wire.error is not None or wire.loop is not _running_loop():
            wire = await self._open()
        return await wire.send(commands)

    async def _open(self) -> _Wire:
        # Callers that arrive while it opens wait for the same wire; a caller that stops
        # waiting does not stop it.
        opening = self._opening
        if opening is None or opening.done() or opening.get_loop() is not _running_loop():
            opening = self._opening = asyncio.ensure_future(self._open_wire())
        return await asyncio.shield(opening)

    async def _open_wire(self) -> _Wire:
        old, self._wire = self._wire, None
        if old is not None:
            await self._give_back(old)
        connection = await self.pool.get_connection()
        try:
            wire = _Wire(connection, self.timeout_s)
        except BaseException:
            await self.pool.release(connection)
            raise
        self._wire = wire
        self.opened += 1
        return wire

    async def _give_back(self, wire: _Wire) -> None:
        if wire.error is None:
            wire.drop(RedisConnectionError("the Redis link was replaced"))
        if wire.loop is _running_loop():
            await wire.connection.disconnect(nowait=True)
            await self.pool.release(wire.connection)
        # A wire from another (closed) event loop stays checked out: its pool is that
        # loop's, and is closed with it.

def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _fresh(exc: BaseException) -> BaseException:
    """One exception object per waiting caller (tracebacks are per raise)."""
    try:
        fresh: BaseException = type(exc)(*exc.args)
    except Exception:
        return exc
    return fresh
