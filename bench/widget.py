"""Widget: visitors one web process holds, and how fast an agent's reply reaches them.

One `bridge serve` process (the one under test), an embedded Redis, and the visitors in a
process of their own (bench/widget_clients.py), each on its own WebSocket with a ticket of
its own. Memory: the server's RSS growth per connected visitor. Fan-out: agents' replies
recorded at a steady rate on random visitors' tickets (as the replies API records them);
the latency runs from the reply's commit in Redis (its stream id: Redis's clock, this
machine's) to its arrival on the visitor's socket, through the change log and the process's
live feed; the note gives it from the recording call too. The webhook
ingest rate is measured alongside: signed Twilio webhooks posted as fast as 16
connections allow while the visitors stay connected and the replies flow.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import redis.asyncio
from twilio.request_validator import RequestValidator

from bench.procs import Server, python_module
from bench.report import Context, Row, Target
from bridge.channels.widget import Visitor, issue_visitor_token
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.tickets import EventType
from bridge.store.embedded import EmbeddedRedis, free_port
from bridge.store.tickets import TicketStore

CONTACT_KEY = "bench-contact-key-0123456789abcdef0123"
SECRET = "bench-widget-secret-0123456789abcdef"
AGENT_TOKEN = "bench-agent-token-0123456789abcdef01"
TWILIO_TOKEN = "bench-twilio-token"
PUBLIC_BASE_URL = "https://bridge.example.com"
ORIGIN = "http://bench.invalid"
KIB = 1024


@dataclass(frozen=True)
class WidgetConfig:
    memory_visitors: int = 10_000
    fanout_sizes: tuple[int, ...] = (1_000, 5_000)
    replies_per_s: int = 200
    fanout_s: float = 10.0
    ingest_s: float = 5.0

    @classmethod
    def quick(cls) -> WidgetConfig:
        return cls(memory_visitors=500, fanout_sizes=(200,), replies_per_s=50, fanout_s=3.0,
                   ingest_s=2.0)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise RuntimeError("no VmRSS")


async def seed(redis_url: str, n: int, offset: int) -> tuple[list[str], list[str]]:
    """n visitors with one ticket each: (their tokens, their ticket ids)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    store = TicketStore(client, contact_key=CONTACT_KEY.encode())
    now_s = int(time.time())
    tokens, tickets = [], []
    try:
        for i in range(offset, offset + n):
            address = f"v_{i:022d}"
            tokens.append(issue_visitor_token(Visitor(address), secret=SECRET, now_s=now_s,
                                              ttl_s=3600))
            msg = InboundMessage(channel=Channel.WIDGET, provider_id=f"widget:seed{i:08d}",
                                 contact_address=address, received_at_ms=now_s * 1000,
                                 body="hello")
            routed = await store.route_inbound(msg, RatingSignal(), ChannelPolicy(),
                                               now_ms=now_s * 1000)
            assert routed.ticket_id
            tickets.append(routed.ticket_id)
    finally:
        await client.aclose()
    return tokens, tickets


class Clients:
    """The visitors' process."""

    def __init__(self, url: str, tokens: list[str], workdir: Path, name: str) -> None:
        path = workdir / f"{name}.tokens"
        path.write_text("\n".join(tokens))
        self.process = subprocess.Popen(
            python_module("bench.widget_clients", url, str(path)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            self.process.kill()
            raise RuntimeError(f"visitors did not connect: {line!r}")

    def latencies_ms(self) -> tuple[list[float], list[float]]:
        """The reply latencies since the last call: from the commit, from the call."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write("report\n")
        self.process.stdin.flush()
        data = json.loads(self.process.stdout.readline())
        return ([float(x) for x in data["latencies_ms"]],
                [float(x) for x in data["call_latencies_ms"]])

    def stop(self) -> None:
        assert self.process.stdin
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.stop()


async def post_replies(redis_url: str, tickets: list[str], rate: float, duration_s: float
                       ) -> int:
    """Agents' replies recorded at a steady rate (open loop), as the replies API records
    them (TicketStore.update_ticket; the API also enqueues the send job, which the widget
    does not wait for). Recorded from this process so that the figure is the fan-out's:
    the reply API's own cost is the web process's, measured by the ingest benchmark's
    kind of load, not here."""
    # Replies wait for a connection rather than fail when the Redis pool is busy.
    client = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
        redis_url, max_connections=64))
    store = TicketStore(client, contact_key=CONTACT_KEY.encode())
    sent = 0

    async def one(ticket_id: str) -> None:
        nonlocal sent
        now_ns = time.time_ns()
        _, event_id = await store.update_ticket(
            ticket_id, author="alice", now_ms=now_ns // 1_000_000,
            event=(EventType.AGENT_REPLY, f"bench {now_ns}", {}))
        sent += bool(event_id)

    try:
        tasks = []
        start = time.monotonic()
        for i in range(int(rate * duration_s)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(random.choice(tickets))))
        await asyncio.gather(*tasks)
    finally:
        await client.aclose()
    return sent


async def ingest(url: str, duration_s: float, connections: int = 16) -> float:
    """Signed Twilio webhooks posted back to back on `connections` connections: per second."""
    done = 0
    validator = RequestValidator(TWILIO_TOKEN)
    deadline = time.monotonic() + duration_s
    async with aiohttp.ClientSession() as http:
        async def worker(n: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < deadline:
                form = {"MessageSid": f"SM{n:04x}{i:012x}{random.getrandbits(64):016x}",
                        "From": f"whatsapp:+3360{n:03d}{i % 500:04d}", "Body": "bench",
                        "To": "whatsapp:+14155238886", "NumMedia": "0"}
                i += 1
                signature = validator.compute_signature(
                    PUBLIC_BASE_URL + "/webhooks/twilio", form)
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": signature}
                async with http.post(f"{url}/webhooks/twilio", data=urlencode(form),
                                     headers=headers) as response:
                    if response.status == 200:
                        done += 1
        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(connections)))
    return done / (time.monotonic() - started)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(ctx: Context, cfg: WidgetConfig | None = None) -> list[Row]:
    cfg = cfg or (WidgetConfig.quick() if ctx.quick else WidgetConfig())
    workdir = ctx.workdir / "widget"
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with EmbeddedRedis(workdir / "redis", appendonly=False) as rds:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_"))}
        env.update(REDIS_URL=rds.url, PORT=str(port), HOST="127.0.0.1",
                   PUBLIC_BASE_URL=PUBLIC_BASE_URL, TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
                   BRIDGE_DATA_DIR=str(workdir / "var"), BRIDGE_CONTACT_KEY=CONTACT_KEY,
                   BRIDGE_SECRET=SECRET, BRIDGE_AGENT_TOKENS=f"alice:{AGENT_TOKEN}",
                   BRIDGE_WIDGET_ORIGINS=ORIGIN, BRIDGE_WIDGET_IP_RATE="1000000",
                   REDIS_MAX_CONNECTIONS="256")
        with Server("bridge", python_module("bridge", "serve"), port=port,
                    log_path=workdir / "bridge.log", env=env) as server:
            server.start()
            rows += _memory(ctx, cfg, server, url, rds.url, workdir)
            for size in cfg.fanout_sizes:
                rows += _fanout(ctx, cfg, url, rds.url, workdir, size)
    return rows


def _memory(ctx: Context, cfg: WidgetConfig, server: Server, url: str, redis_url: str,
            workdir: Path) -> list[Row]:
    tokens, _ = asyncio.run(seed(redis_url, cfg.memory_visitors, offset=0))
    # Warm the process (first connections allocate the pools and caches every later one
    # shares), then measure the growth for the rest.
    with Clients(url, tokens[:100], workdir, "warm"):
        before = rss_bytes(server.pid)
        with Clients(url, tokens[100:], workdir, "memory"):
            time.sleep(1.0)
            after = rss_bytes(server.pid)
    held = len(tokens) - 100
    per_kib = (after - before) / held / KIB
    ctx.log(f"  widget: {held:,} visitors held, {per_kib:.1f} KiB each "
            f"(RSS {before / KIB / KIB:.0f} -> {after / KIB / KIB:.0f} MiB)")
    return [Row(bench="widget", name=f"memory per connected visitor ({held:,} held)",
                value=round(per_kib, 1), unit="KiB", target=Target(op="<=", threshold=40),
                note=f"RSS growth of the web process, {held:,} WebSockets after 100 warm-up")]


def _fanout(ctx: Context, cfg: WidgetConfig, url: str, redis_url: str, workdir: Path,
            size: int) -> list[Row]:
    tokens, tickets = asyncio.run(seed(redis_url, size, offset=1_000_000 + size))
    with Clients(url, tokens, workdir, f"fanout{size}") as clients:
        return _fanout_rows(ctx, cfg, redis_url, url, clients, size, tickets)


def _fanout_rows(ctx: Context, cfg: WidgetConfig, redis_url: str, url: str, clients: Clients,
                 size: int, tickets: list[str]) -> list[Row]:

    # First the replies alone (the latency figures), then webhooks posted flat out while
    # the replies keep flowing (the ingest figure, and the latency under that load).
    sent = asyncio.run(post_replies(redis_url, tickets, cfg.replies_per_s, cfg.fanout_s))
    time.sleep(2.0)  # the last replies arrive
    latencies, from_call = clients.latencies_ms()

    async def both() -> tuple[int, float]:
        replies = asyncio.create_task(post_replies(redis_url, tickets, cfg.replies_per_s,
                                                   cfg.ingest_s + 1))
        rate = await ingest(url, cfg.ingest_s)
        return await replies, rate

    _, ingest_rate = asyncio.run(both())
    time.sleep(2.0)
    loaded, _ = clients.latencies_ms()
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    loaded_p99 = percentile(loaded, 0.99)
    ctx.log(f"  widget: {size:,} visitors, {sent} replies at {cfg.replies_per_s}/s: "
            f"{len(latencies)} received, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
            f"webhooks alongside {ingest_rate:,.0f}/s (reply p99 then {loaded_p99:.0f} ms)")
    note = (f"{len(latencies)} of {sent} replies received; from the commit (the event's "
            f"stream id); from the agent's call: p50 {percentile(from_call, 0.5):.0f} ms, "
            f"p99 {percentile(from_call, 0.99):.0f} ms")
    return [
        Row(bench="widget", name=f"reply fan-out p50, {size:,} visitors", value=round(p50, 1),
            unit="ms", note=note),
        Row(bench="widget", name=f"reply fan-out p99, {size:,} visitors", value=round(p99, 1),
            unit="ms", target=Target(op="<", threshold=100) if size >= 5000 else None,
            note=f"{cfg.replies_per_s} replies/s recorded as the replies API does"),
        Row(bench="widget", name=f"webhook ingest alongside, {size:,} visitors",
            value=round(ingest_rate), unit="msg/s",
            note=f"signed Twilio webhooks, 16 connections, while {cfg.replies_per_s} "
                 f"replies/s flow (their p99 then: {loaded_p99:.0f} ms)"),
    ]
