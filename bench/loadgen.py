"""HTTP load generator for the ingest benchmark, written for low overhead and run in its
own process (pinned to its own core when the machine allows) so it does not compete with
the server under test.

It speaks HTTP/1.1 over raw asyncio sockets with keep-alive: requests are pre-built bytes
(correctly signed Twilio inbound forms, a unique MessageSid each) generated *before* the
clock starts, and responses are parsed just enough to read the status and skip the body.
The same generator and the same requests are used for the bare aiohttp baseline and for
the bridge.

Two modes, both bounded in request count and in time:

- closed: `concurrency` connections each send a request as soon as the previous answer
  arrives, for `warmup_s` (not counted) then `duration_s` (counted). Measures max rate.
- open: requests are *scheduled* at a constant rate for `duration_s` (arrivals do not wait
  for answers) over a pool of `concurrency` connections; latency is measured from the
  scheduled send time, so a stalled server shows up in the latency instead of slowing the
  arrivals down (no coordinated omission).

Parent side: `run_load(spec)` starts `python -m bench.loadgen '<spec JSON>'` and returns
the parsed result.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.cpuwatch import ProcessCpu
from bench.forms import TWILIO_PATH, build_requests
from bench.stats import summary_ms

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    host: str = "127.0.0.1"
    port: int
    mode: Literal["closed", "open"]
    concurrency: int
    duration_s: float
    warmup_s: float = 0.0
    rate: float = 0.0  # open mode: arrivals per second
    max_requests: int  # hard bound on requests generated and sent
    timeout_s: float = 10.0  # per request
    token: str
    public_base_url: str
    path: str = TWILIO_PATH
    contacts: int = 1000  # messages come from contacts 0..contacts-1, drawn at random
    # …unless new_contacts: then request i comes from contact first_contact + i, each
    # message from a contact never seen before (every message opens a conversation).
    new_contacts: bool = False
    first_contact: int = 0
    sid_prefix: str  # 12 hex digits: makes every MessageSid of the whole run unique
    seed: int = 1
    # Processes whose CPU use is read over the measured window: label -> pid.
    watch_pids: dict[str, int] = field(default_factory=dict)
    cpus: list[int] | None = None  # pin the generator to these CPUs


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    mode: str
    offered_rate: float  # open mode; 0 for closed
    concurrency: int
    sent: int  # every request written, warm-up and drain included
    ok: int  # every 200 answer, warm-up and drain included
    statuses: dict[str, int]  # non-200 answers by status code, whole run
    failures: dict[str, int]  # no answer (timeout, connection error), whole run
    dropped: int  # open mode: scheduled but never sent (generator deadline)
    window_s: float
    window_ok: int
    window_errors: int
    rate: float  # 200 answers per second in the measured window
    latency_ms: dict[str, float]  # of 200 answers in the window
    pool_exhausted: bool
    cpu_percent: dict[str, float]  # over the window, 100 = one core
    generation_s: float

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values()) + self.dropped


# ----------------------------------------------------------------------- client


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            waiter.set_exception(ConnectionError("bad status line"))
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
        waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by server"))

    def send(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Client:
    """A connection slot that reconnects after a failure; tallies every outcome."""

    def __init__(self, spec: LoadSpec, tally: _Tally) -> None:
        self.spec = spec
        self.tally = tally
        self.conn: _Conn | None = None

    async def connect(self) -> _Conn:
        if self.conn is None or self.conn.closed:
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(_Conn, self.spec.host, self.spec.port)
            self.conn = proto
        return self.conn

    async def request(self, data: bytes) -> int | None:
        """The status code, or None when no answer came (counted as a failure)."""
        self.tally.sent += 1
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                conn = await self.connect()
                status = await conn.send(data)
        except TimeoutError:
            self._fail("timeout")
            return None
        except OSError as exc:  # ConnectionError is an OSError
            self._fail(type(exc).__name__)
            return None
        if status == 200:
            self.tally.ok += 1
        else:
            self.tally.statuses[str(status)] += 1
        return status

    def _fail(self, kind: str) -> None:
        self.tally.failures[kind] += 1
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


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


async def _closed(spec: LoadSpec, reqs: list[bytes], tally: _Tally, cpu: ProcessCpu
                  ) -> tuple[float, dict[str, float], bool]:
    clients = [_Client(spec, tally) for _ in range(spec.concurrency)]
    for c in clients:
        await c.connect()
    next_index = 0
    t_start = time.perf_counter()
    warm_end = t_start + spec.warmup_s
    end = warm_end + spec.duration_s
    cpu_window: dict[str, float] = {}

    async def worker(client: _Client) -> None:
        nonlocal next_index
        while next_index < len(reqs):
            t0 = time.perf_counter()
            if t0 >= end:
                return
            data = reqs[next_index]
            next_index += 1
            status = await client.request(data)
            t1 = time.perf_counter()
            if warm_end <= t1 < end:
                tally.last_done = t1
                if status == 200:
                    tally.window_ok += 1
                    tally.latencies.append(t1 - t0)
                else:
                    tally.window_errors += 1

    async def watch() -> None:
        nonlocal cpu_window
        await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
        cpu.begin()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu_window = cpu.end()

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(worker(c) for c in clients))
    exhausted = next_index >= len(reqs) and time.perf_counter() < end
    if exhausted:
        watcher.cancel()
        cpu_window = cpu.end()
    else:
        await watcher
    for c in clients:
        c.close()
    window = (min(end, tally.last_done) if exhausted else end) - warm_end
    return max(window, 1e-9), cpu_window, exhausted


async def _open(spec: LoadSpec, reqs: list[bytes], tally: _Tally, cpu: ProcessCpu
                ) -> tuple[float, dict[str, float], int]:
    clients = [_Client(spec, tally) for _ in range(spec.concurrency)]
    for c in clients:
        await c.connect()
    count = min(len(reqs), round(spec.rate * spec.duration_s))
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    start = time.perf_counter() + 0.05
    # Requests still queued this long after the last arrival are dropped (and reported):
    # keeps the run bounded in time when the offered rate is more than the server takes.
    give_up = start + spec.duration_s + spec.timeout_s
    dropped = 0

    async def dispatch() -> None:
        for i in range(count):
            intended = start + i / spec.rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((intended, i))
        for _ in clients:
            queue.put_nowait(None)

    async def worker(client: _Client) -> None:
        nonlocal dropped
        while (item := await queue.get()) is not None:
            intended, i = item
            if time.perf_counter() > give_up:
                dropped += 1
                continue
            status = await client.request(reqs[i])
            t1 = time.perf_counter()
            tally.last_done = t1
            if status == 200:
                tally.window_ok += 1
                tally.latencies.append(t1 - intended)
            else:
                tally.window_errors += 1

    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cpu.begin()
    await asyncio.gather(dispatch(), *(worker(c) for c in clients))
    cpu_window = cpu.end()
    for c in clients:
        c.close()
    return max(tally.last_done - start, 1e-9), cpu_window, dropped


async def run_async(spec: LoadSpec, reqs: list[bytes], generation_s: float) -> LoadResult:
    tally = _Tally()
    cpu = ProcessCpu(spec.watch_pids)
    dropped = 0
    exhausted = False
    if spec.mode == "closed":
        window, cpu_window, exhausted = await _closed(spec, reqs, tally, cpu)
    else:
        window, cpu_window, dropped = await _open(spec, reqs, tally, cpu)
    return LoadResult(
        mode=spec.mode,
        offered_rate=spec.rate if spec.mode == "open" else 0.0,
        concurrency=spec.concurrency,
        sent=tally.sent,
        ok=tally.ok,
        statuses=dict(tally.statuses),
        failures=dict(tally.failures),
        dropped=dropped,
        window_s=window,
        window_ok=tally.window_ok,
        window_errors=tally.window_errors + (dropped if spec.mode == "open" else 0),
        rate=tally.window_ok / window,
        latency_ms=summary_ms(tally.latencies),
        pool_exhausted=exhausted,
        cpu_percent=cpu_window,
        generation_s=generation_s,
    )


def main(argv: list[str]) -> int:
    spec = LoadSpec(**json.loads(argv[1]))
    if spec.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec.cpus)
    t0 = time.perf_counter()
    reqs = build_requests(spec)
    generation_s = time.perf_counter() - t0
    result = asyncio.run(run_async(spec, reqs, generation_s))
    print(json.dumps(asdict(result)), flush=True)
    return 0


# ----------------------------------------------------------------------- parent side


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one load phase in a child process and return its result (bounded in time)."""
    # Generation costs ~60 µs a request on this class of machine; leave room for it.
    budget = (30 + spec.max_requests * 2e-4 + spec.warmup_s + spec.duration_s
              + 2 * spec.timeout_s)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(asdict(spec))],
        cwd=ROOT, capture_output=True, text=True, timeout=budget, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return LoadResult(**data)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
