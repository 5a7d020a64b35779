"""Export: webhook deliveries per second to a local receiver, and the time from a ticket
change to its delivery (DESIGN §8: at least 500 deliveries/s; p99 under 1 s at 100
changes/s).

Set-up: an embedded Redis (AOF on, as in production), `python -m workers.export` and
`python -m workers.relay` as `make run` starts them, and a local receiver (aiohttp, in a
thread of this process) that answers 204 and notes when each webhook-id arrived. The
sender signs every delivery (Standard Webhooks) and goes through the SSRF guard, with
BRIDGE_EXPORT_ALLOW_PRIVATE=1 to reach the loopback receiver.

Phases, bounded in count and time:
1. throughput: `backlog` deliveries (JSON bodies of a typical message.received size, over
   `tickets` tickets) appended to the endpoint's outbox at once; timed from the append to
   the last delivery received;
2. latency: customer messages routed through the real store (TicketStore.route_inbound) at
   `rate` per second for `steady_s`, each an export event or two through the change log,
   the relay's export consumer, the outbox and the sender; per event, from the change's
   commit (its log entry id, Redis's clock, in the webhook-id) to its arrival.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import redis.asyncio
from aiohttp import web

from bench.corpus import contact_address
from bench.data import CONTACT_KEY
from bench.procs import Background, python_module
from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.store.embedded import EmbeddedRedis
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import NewDelivery, append
from bridge.store.tickets import TicketStore

THROUGHPUT_TARGET = 500.0  # deliveries/s
P99_TARGET_MS = 1000.0


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    backlog: int = 10_000
    tickets: int = 1_000
    rate: float = 100.0  # changes/s
    steady_s: float = 20.0
    timeout_s: float = 120.0


SMOKE = ExportConfig(backlog=300, tickets=30, rate=20.0, steady_s=1.0, timeout_s=30.0)
QUICK = ExportConfig(backlog=3_000, tickets=300, steady_s=5.0)


@dataclass
class Receiver:
    """The local receiver: webhook-id -> arrival (time.time()), in a thread of its own."""

    arrivals: dict[str, float] = field(default_factory=dict)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            await request.read()
        except ConnectionResetError:  # the sender stopped mid-request (end of a phase)
            return web.Response(status=499)
        self.arrivals[request.headers["webhook-id"]] = time.time()
        return web.Response(status=204)

    def start(self) -> Receiver:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/hook"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        threading.Thread(target=serve, name="export-receiver", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def _wait(until: float, check: object, what: str, procs: list[Background]) -> None:
    while not check():  # type: ignore[operator]
        for proc in procs:
            proc.check_running()
        if time.monotonic() > until:
            logs = "\n".join(p.log_tail() for p in procs)
            raise RuntimeError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.01)


def _body(n: int) -> str:
    return json.dumps({"type": "message.received", "timestamp": "2026-12-02T12:00:00.000Z",
                       "schema_version": 1, "data": {
                           "ticket": {"id": str(n)}, "contact": {"id": "c" * 43},
                           "message": {"id": f"1800000000000-{n}", "type": "customer_message",
                                       "at": "2026-12-02T12:00:00.000Z",
                                       "author": "customer", "body": "Bonjour " * 12}}})


def _commit_s(webhook_id: str) -> float:
    """evt_<ticket>_<log id ms-seq>_<n>: the change's commit time."""
    return int(webhook_id.split("_")[2].split("-")[0]) / 1000


async def _route_steadily(url: str, config: ExportConfig) -> int:
    client = redis.asyncio.Redis.from_url(url)
    store = TicketStore(client, contact_key=CONTACT_KEY.encode())
    interval_s = 1 / config.rate
    count = int(config.rate * config.steady_s)
    started = time.monotonic()
    try:
        for n in range(count):
            delay = started + n * interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ms = int(time.time() * 1000)
            # A few hundred customers: new tickets first, then appends to them.
            message = InboundMessage(channel=Channel.WHATSAPP, provider_id=f"SMbench{n:08d}",
                                     contact_address=contact_address(n % 300),
                                     received_at_ms=now_ms, body=f"message {n}")
            await store.route_inbound(message, RatingSignal(), ChannelPolicy(), now_ms=now_ms)
    finally:
        await client.aclose()
    return count


def run(ctx: Context) -> list[Row]:
    config = QUICK if ctx.quick else ExportConfig()
    return measure(ctx, config)


def measure(ctx: Context, config: ExportConfig) -> list[Row]:
    redis_server = EmbeddedRedis(ctx.workdir / "export-redis", appendonly=True).start()
    receiver = Receiver().start()
    env = {"REDIS_URL": redis_server.url, "BRIDGE_CONTACT_KEY": CONTACT_KEY,
           "BRIDGE_ENV": "development", "BRIDGE_EXPORT_ALLOW_PRIVATE": "1",
           "PATH": "/usr/bin:/bin"}
    sender = Background("export", python_module("workers.export", "--log-level", "WARNING"),
                        log_path=ctx.workdir / "export.log", env=env)
    relay = Background("relay", python_module("workers.relay", "--log-level", "WARNING"),
                       log_path=ctx.workdir / "relay.log", env=env)
    try:
        endpoint, _ = asyncio.run(_endpoint(redis_server.url, receiver.url))
        sender.start()
        time.sleep(1.5)  # the sender takes its lease and starts the endpoint's task
        # 1. throughput
        deliveries = [NewDelivery(endpoint, f"evt_{n % config.tickets}_1-{n}_0",
                                  str(n % config.tickets), "message.received", _body(n), 1)
                      for n in range(config.backlog)]
        started = time.monotonic()
        asyncio.run(_append(redis_server.url, deliveries))
        _wait(started + config.timeout_s, lambda: len(receiver.arrivals) >= config.backlog,
              "the backlog's deliveries", [sender])
        elapsed_s = time.monotonic() - started
        per_s = config.backlog / elapsed_s
        ctx.log(f"export: {config.backlog} deliveries in {elapsed_s:.2f} s")
        # 2. latency, through the change log and the relay
        receiver.arrivals.clear()
        relay.start()
        time.sleep(1.5)
        changes = asyncio.run(_route_steadily(redis_server.url, config))
        deadline = time.monotonic() + config.timeout_s
        _wait(deadline, lambda: len(receiver.arrivals) >= changes, "the steady deliveries",
              [sender, relay])
        time.sleep(1.0)  # the second event of an opening, if it is late
        latencies = [max(0.0, at - _commit_s(wid)) for wid, at in receiver.arrivals.items()]
        lat = summary_ms(latencies)
        ctx.log(f"export: {changes} changes, {int(lat['n'])} deliveries; change to delivery "
                f"p50 {fmt(lat['p50'])} ms, p99 {fmt(lat['p99'])} ms, max {fmt(lat['max'])} ms")
    finally:
        relay.stop()
        sender.stop()
        receiver.stop()
        redis_server.stop()
    ctx.add_section("Export: change to delivery", table(
        ["changes", "deliveries", "mean", "p50", "p90", "p99", "max"],
        [[str(changes), str(int(lat["n"]))] + [f"{fmt(lat[k])} ms" for k in
                                                ("mean", "p50", "p90", "p99", "max")]]))
    return [
        Row(bench="export", name=f"deliveries/s to a local receiver ({config.backlog} queued, "
            f"{config.tickets} tickets)", value=per_s, unit="/s",
            target=Target(op=">=", threshold=THROUGHPUT_TARGET)),
        Row(bench="export", name=f"p99 change to delivery at {fmt(config.rate)} changes/s",
            value=lat["p99"], unit="ms", target=Target(op="<", threshold=P99_TARGET_MS),
            note=f"p50 {fmt(lat['p50'])} ms, max {fmt(lat['max'])} ms"),
    ]


async def _endpoint(url: str, receiver_url: str) -> tuple[str, str]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        endpoint, secret = await EndpointStore(client).create(
            url=receiver_url, events=("*",), now_ms=int(time.time() * 1000))
        return endpoint.id, secret
    finally:
        await client.aclose()


async def _append(url: str, deliveries: list[NewDelivery]) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        for start in range(0, len(deliveries), 1000):
            await append(client, deliveries[start:start + 1000])
    finally:
        await client.aclose()
