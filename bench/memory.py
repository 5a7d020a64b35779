"""Redis memory per stored message: `INFO memory` used_memory before and after routing N
customer messages through TicketStore.route_inbound (as the webhook does), spread over a
pool of contacts, with realistic ~80-character bodies. The baseline is the message's own
payload (body + data JSON as stored), so the ratio is Redis's overhead factor. A break-down
by key family (MEMORY USAGE of every key) shows where the bytes go.

No DESIGN target: the figure is for capacity planning (a 25 MB Redis holds how many
messages?).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio

from bench.data import bench_store, event_fields, inbound, route, whatsapp_policy
from bench.report import Context, Row, fmt, table
from bridge.store.embedded import EmbeddedRedis


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    messages: int = 20_000
    contacts: int = 1_000
    concurrency: int = 32


SMOKE = MemoryConfig(messages=300, contacts=20)
QUICK = MemoryConfig(messages=5_000, contacts=250)

# Key families, most specific first (ticket ids and contact ids replaced).
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ticket event streams", re.compile(r"^\{p:\d+\}:c:[^:]+:t:\d+:events$")),
    ("ticket delivery hashes", re.compile(r"^\{p:\d+\}:c:[^:]+:t:\d+:delivery$")),
    ("ticket hashes", re.compile(r"^\{p:\d+\}:c:[^:]+:t:\d+$")),
    ("contact 'seen' zsets (dedupe)", re.compile(r"^\{p:\d+\}:c:[^:]+:seen$")),
    ("contact hashes", re.compile(r"^\{p:\d+\}:c:[^:]+:contact$")),
    ("change log streams", re.compile(r"^\{p:\d+\}:log$")),
    ("list indexes", re.compile(r"^bridge:idx:")),
    ("ticket -> contact hash", re.compile(r"^bridge:ticket:contact$")),
    ("ticket id sequence", re.compile(r"^bridge:seq:")),
)


@dataclass(frozen=True)
class Outcome:
    messages: int
    contacts: int
    used_before: int
    used_after: int
    payload_bytes: float  # mean body + data JSON of one message
    families: dict[str, tuple[int, int]]  # family -> (keys, bytes)

    @property
    def per_message(self) -> float:
        return (self.used_after - self.used_before) / self.messages


async def _used_memory(client: redis.asyncio.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def measure_async(cfg: MemoryConfig, url: str) -> Outcome:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
        store = bench_store(client)
        policy = whatsapp_policy()
        # Load the routing script and create the global keys before the first reading.
        await route(store, inbound(10_000_000, 0, run="m0"), policy)
        await client.flushdb()
        before = await _used_memory(client)
        sem = asyncio.Semaphore(cfg.concurrency)
        payload = 0

        async def one(seq: int) -> None:
            nonlocal payload
            msg = inbound(seq % cfg.contacts, seq, run="m1")
            fields = event_fields(msg)
            payload += len(fields["body"].encode()) + len(fields["data"].encode())
            async with sem:
                await route(store, msg, policy)

        # In order per contact (a customer's messages arrive one after the other).
        for start in range(0, cfg.messages, cfg.contacts):
            await asyncio.gather(*(one(s) for s in range(start,
                                                         min(cfg.messages,
                                                             start + cfg.contacts))))
        after = await _used_memory(client)
        families: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        async for raw in client.scan_iter(count=1000):
            key = raw.decode()
            family = next((name for name, rx in _FAMILIES if rx.match(key)), "other")
            families[family][0] += 1
            families[family][1] += int(await client.memory_usage(key, samples=0) or 0)
        return Outcome(
            messages=cfg.messages, contacts=cfg.contacts, used_before=before,
            used_after=after, payload_bytes=payload / cfg.messages,
            families={k: (v[0], v[1]) for k, v in families.items()},
        )
    finally:
        await client.aclose()


def measure(cfg: MemoryConfig, workdir: Path) -> Outcome:
    with EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        return asyncio.run(measure_async(cfg, rds.url))


def rows(o: Outcome) -> list[Row]:
    return [Row(
        bench="memory",
        name=f"Redis memory per stored message ({o.messages:,} messages, "
             f"{o.contacts:,} contacts)",
        value=o.per_message, unit="B/msg", baseline=o.payload_bytes,
        baseline_name="payload: body + data JSON",
    )]


def sections(ctx: Context, o: Outcome) -> None:
    lines = [[name, f"{n:,}", f"{size:,}", fmt(size / o.messages)]
             for name, (n, size) in sorted(o.families.items(), key=lambda kv: -kv[1][1])]
    total = sum(size for _, size in o.families.values())
    lines.append(["**all keys**", f"{sum(n for n, _ in o.families.values()):,}",
                  f"{total:,}", fmt(total / o.messages)])
    ctx.add_section("Memory details", "\n".join([
        f"`used_memory` went from {o.used_before:,} to {o.used_after:,} bytes for "
        f"{o.messages:,} messages routed by `TicketStore.route_inbound` over {o.contacts:,} "
        f"contacts ({o.messages // o.contacts} messages per ticket); mean payload "
        f"{o.payload_bytes:.0f} bytes. Per key family (`MEMORY USAGE`, exact; the sum "
        "leaves out Redis's own overhead that used_memory counts):",
        "",
        table(["Keys", "count", "bytes", "bytes/message"], lines),
    ]))


def run(ctx: Context, cfg: MemoryConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else MemoryConfig())
    ctx.log(f"  memory: routing {cfg.messages:,} messages over {cfg.contacts:,} contacts")
    outcome = measure(cfg, ctx.workdir / "memory")
    sections(ctx, outcome)
    return rows(outcome)
