"""The load generator's client side (bench/loadgen.py): keep-alive connections driven
from their protocols' callbacks, in a closed or an open loop.

Answers are handled in the protocol's data_received: no task, future or timer per request
(one watchdog checks timeouts); the next requests go out together once a loop iteration's
answers are read, as when a task per connection awaited its answer, so the servers under
test see requests arrive in the same bursts. The generator shares its CPU with Redis and
the relay, so what it spends per request is taken from them under the bridge's load (not
under the baseline's, which needs neither). In one run alternating the two versions (6
rounds each, 2026-12-05): 30 µs of generator CPU a request against 35-37 µs with a task
per connection, and the same baseline rate (20,810 and 20,573 a second, medians).

It stays on asyncio's own event loop. On uvloop it spent 19.6 µs a request instead of
30.5, but the bare baseline then spent 53.1 µs a request instead of 48.3 and answered
18,850 a second instead of 20,673 (medians of 5 rounds alternating the two, 2026-12-05):
the timing of the arrivals changes what the server under test pays per request, and
a cheaper generator would have moved the bridge's ratio through the baseline's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from bench.cpuwatch import ProcessCpu
from bench.loadspec import LoadSpec


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, driver: _Driver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.sent_at = 0.0  # perf_counter() when the request in flight was written
        self.started = 0.0  # when its latency counts from (open loop: its scheduled time)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, started: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.sent_at = time.perf_counter()
        self.started = started
        self.driver.tally.sent += 1
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            self.fail("bad status line")
            return
        start = end + 4
        idx = head.find(b"\r\ncontent-length:")
        if idx >= 0:
            stop = head.find(b"\r\n", idx + 2)
            length = int(head[idx + 17: stop if stop >= 0 else len(head)])
            total = start + length
            if len(self.buf) < total:
                return
        elif b"\r\ntransfer-encoding: chunked" in head:
            last = self.buf.find(b"0\r\n\r\n", start)
            if last < 0:
                return
            total = last + 5
        else:
            total = start
        del self.buf[:total]
        self.busy = False
        self.driver.answered(self, status)

    def fail(self, kind: str) -> None:
        """The request in flight gets no answer: counted, and the connection replaced."""
        if self.busy:
            self.busy = False
            self.driver.failed(self, kind)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.busy:
                self.busy = False
                self.driver.failed(self, "ConnectionResetError" if exc else
                                   "connection closed by server")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


@dataclass
class _Tally:
    sent: int = 0
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    window_ok: int = 0
    window_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    last_done: float = 0.0


class _Driver:
    """Sends requests over `concurrency` connections and tallies the answers. Subclasses
    decide what a connection sends next (`next_for`) and which answers count (`record`)."""

    def __init__(self, spec: LoadSpec, reqs: list[bytes]) -> None:
        self.spec = spec
        self.reqs = reqs
        self.tally = _Tally()
        self.conns: list[_Conn] = []
        self.done: asyncio.Future[None] | None = None
        self.finished = False
        self._replacing = 0  # connections being replaced after a failure
        self.answered_conns: list[_Conn] = []  # to send their next request

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self), self.spec.host,
                                               self.spec.port)
        return conn

    async def start(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.conns = [await self._connect() for _ in range(self.spec.concurrency)]

    def answered(self, conn: _Conn, status: int) -> None:
        now = time.perf_counter()
        if status == 200:
            self.tally.ok += 1
        else:
            self.tally.statuses[str(status)] += 1
        self.record(conn.started, now, status == 200)
        # The next requests go out together once this loop iteration's answers are read,
        # as they did when a task per connection awaited its answer: the servers under
        # test see requests arrive in the same bursts (writing each from data_received
        # spread them out, and the bare baseline then spent 48 -> 51 µs a request).
        self.answered_conns.append(conn)
        if len(self.answered_conns) == 1:
            asyncio.get_running_loop().call_soon(self._send_next)

    def _send_next(self) -> None:
        conns, self.answered_conns = self.answered_conns, []
        for conn in conns:
            self.next_for(conn)

    def failed(self, conn: _Conn, kind: str) -> None:
        self.tally.failures[kind] += 1
        self.record(conn.started, time.perf_counter(), False)
        if self.wants_more():
            self.replace(conn)
        else:
            self.check_finished()

    def replace(self, conn: _Conn) -> None:
        self._replacing += 1
        asyncio.get_running_loop().create_task(self._replace(conn))

    async def _replace(self, old: _Conn) -> None:
        """A new connection in place of a failed one, which then sends what comes next. A
        connection that cannot be made is one failure (it is not a request: the old
        version counted a failed connect against the request it was for), retried within
        the spec's timeout until nothing is left to send."""
        try:
            while self.wants_more():
                try:
                    async with asyncio.timeout(self.spec.timeout_s):
                        conn = await self._connect()
                except (OSError, TimeoutError) as exc:
                    self.tally.failures[f"connect {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
                self.conns[self.conns.index(old)] = conn
                self.next_for(conn)
                return
        finally:
            self._replacing -= 1
            # Here, not after the loop: a replacement made once nothing was left to send
            # is the last thing the phase waited for (its next_for found _replacing > 0).
            self.check_finished()

    def check_finished(self) -> None:
        if (not self.wants_more() and not self._replacing
                and not any(c.busy for c in self.conns)):
            self.finish()

    async def watchdog(self) -> None:
        """Fails requests that got no answer within the spec's timeout."""
        while not self.finished:
            await asyncio.sleep(min(0.1, self.spec.timeout_s / 4))
            now = time.perf_counter()
            for conn in list(self.conns):
                if conn.busy and now - conn.sent_at > self.spec.timeout_s:
                    conn.fail("timeout")

    def finish(self) -> None:
        self.finished = True
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        self.finished = True
        for conn in self.conns:
            conn.close()

    def record(self, started: float, now: float, ok: bool) -> None:
        """Count an outcome if it falls in the measured window."""
        raise NotImplementedError

    def count_in_window(self, started: float, now: float, ok: bool) -> None:
        self.tally.last_done = now
        if ok:
            self.tally.window_ok += 1
            self.tally.latencies.append(now - started)
        else:
            self.tally.window_errors += 1

    def next_for(self, conn: _Conn) -> None:
        """Send `conn`'s next request, or leave it idle (and finish when all are)."""
        raise NotImplementedError

    def wants_more(self) -> bool:
        """Whether requests are left to send."""
        raise NotImplementedError


class _ClosedLoop(_Driver):
    """Each connection sends its next request as soon as its answer arrives."""

    def __init__(self, spec: LoadSpec, reqs: list[bytes]) -> None:
        super().__init__(spec, reqs)
        self.next_index = 0
        self.warm_end = self.end = 0.0

    def begin(self) -> None:
        t_start = time.perf_counter()
        self.warm_end = t_start + self.spec.warmup_s
        self.end = self.warm_end + self.spec.duration_s
        for conn in self.conns:
            self.next_for(conn)

    def record(self, started: float, now: float, ok: bool) -> None:
        if self.warm_end <= now < self.end:
            self.count_in_window(started, now, ok)

    def wants_more(self) -> bool:
        return self.next_index < len(self.reqs) and time.perf_counter() < self.end

    def next_for(self, conn: _Conn) -> None:
        if not self.wants_more():
            self.check_finished()
        elif conn.closed:  # closed by the server after its answer: keep the slot
            self.replace(conn)
        else:
            data = self.reqs[self.next_index]
            self.next_index += 1
            conn.send(data, time.perf_counter())


class _OpenLoop(_Driver):
    """Requests arrive at their scheduled times, whatever the answers take; one waits for
    a free connection when every one is busy (its latency counts from its schedule)."""

    def __init__(self, spec: LoadSpec, reqs: list[bytes]) -> None:
        super().__init__(spec, reqs)
        self.count = min(len(reqs), round(spec.rate * spec.duration_s))
        self.start_at = self.give_up = 0.0
        self.waiting: deque[tuple[float, int]] = deque()
        self.idle: list[_Conn] = []
        self.scheduled = 0
        self.dropped = 0

    def record(self, started: float, now: float, ok: bool) -> None:
        self.count_in_window(started, now, ok)

    def _drop_late(self) -> None:
        # Requests still waiting this long after the last arrival are dropped (and
        # reported): the run stays bounded when the offered rate is more than the server
        # takes, or when it answers nothing at all.
        if self.waiting and time.perf_counter() > self.give_up:
            self.dropped += len(self.waiting)
            self.waiting.clear()

    def wants_more(self) -> bool:
        self._drop_late()
        return self.scheduled < self.count or bool(self.waiting)

    def next_for(self, conn: _Conn) -> None:
        self._drop_late()
        if self.waiting and not conn.closed:
            intended, i = self.waiting.popleft()
            conn.send(self.reqs[i], intended)
            return
        if conn.closed:  # closed by the server after its answer: keep the slot
            if self.wants_more():
                self.replace(conn)
        else:
            self.idle.append(conn)
        self.check_finished()

    async def dispatch(self) -> None:
        """Schedules the arrivals: each loop wake-up sends every request now due."""
        rate = self.spec.rate
        self.idle = list(self.conns)
        while self.scheduled < self.count:
            now = time.perf_counter()
            due = min(self.count, int((now - self.start_at) * rate) + 1)
            while self.scheduled < due:
                self.waiting.append((self.start_at + self.scheduled / rate, self.scheduled))
                self.scheduled += 1
            while self.waiting and self.idle:
                conn = self.idle.pop()
                if conn.closed:  # closed by the server while idle
                    self.replace(conn)
                elif not conn.busy:
                    self.next_for(conn)
            if self.scheduled < self.count:
                await asyncio.sleep(max(0.0, self.start_at + self.scheduled / rate
                                        - time.perf_counter()))
        while self.waiting and not self.finished:  # the last arrivals, once a connection frees
            await asyncio.sleep(0.01)
            self._drop_late()
        self.check_finished()


async def closed_loop(spec: LoadSpec, reqs: list[bytes], cpu: ProcessCpu
                  ) -> tuple[_Tally, float, dict[str, float], bool]:
    driver = _ClosedLoop(spec, reqs)
    await driver.start()
    assert driver.done is not None
    driver.begin()
    watchdog = asyncio.create_task(driver.watchdog())
    cpu_window: dict[str, float] = {}
    await asyncio.sleep(max(0.0, driver.warm_end - time.perf_counter()))
    cpu.begin()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(driver.done),
                               max(0.0, driver.end - time.perf_counter()))
    exhausted = driver.next_index >= len(reqs) and time.perf_counter() < driver.end
    cpu_window = cpu.end()
    # What is still in flight at the end is answered (or times out) before closing, as
    # the connections' last requests were in the task-per-connection version.
    await driver.done
    driver.close()
    watchdog.cancel()
    tally = driver.tally
    window = (min(driver.end, tally.last_done) if exhausted else driver.end) - driver.warm_end
    return tally, max(window, 1e-9), cpu_window, exhausted


async def open_loop(spec: LoadSpec, reqs: list[bytes], cpu: ProcessCpu
                ) -> tuple[_Tally, float, dict[str, float], int]:
    driver = _OpenLoop(spec, reqs)
    await driver.start()
    assert driver.done is not None
    driver.start_at = time.perf_counter() + 0.05
    driver.give_up = driver.start_at + spec.duration_s + spec.timeout_s
    watchdog = asyncio.create_task(driver.watchdog())
    await asyncio.sleep(max(0.0, driver.start_at - time.perf_counter()))
    cpu.begin()
    await driver.dispatch()
    await driver.done
    cpu_window = cpu.end()
    driver.close()
    watchdog.cancel()
    window = driver.tally.last_done - driver.start_at
    return driver.tally, max(window, 1e-9), cpu_window, driver.dropped
