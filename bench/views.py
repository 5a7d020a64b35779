"""Saved views (issue 13): a view's count and first page stay fast at 100,000 tickets, goal
at most 1.5x the same at 1,000.

Tickets are bulk-written (the hash fields and list indexes the routing script and
update_ticket leave, with groups, assignees and a ticket field), then each view's sets are
built by the store's own `ViewStore.rebuild` (what saving a view does). One read is what
the API's `GET /api/v1/views/{id}/tickets` costs in the store: the counts of the view's
parts in the viewer's scope, the first page merged from the parts, and the page's tickets.
Timings are interleaved across sizes so that a noisy neighbour slows both alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio

from bench.data import bench_store
from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bench.threads import STATUS_MIX, interleaved
from bridge.core.views import View, aging_range, parse_view
from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis
from bridge.store.views import ViewStore

GROUPS = ("", "fr", "sn", "ml")
AGENTS = ("", "", "awa", "binta", "cheikh", "diane")
COUNTRIES = (None, "fr", "sn")
YELLOW_S, RED_S = 18 * 3600, 24 * 3600

# The views of a field deployment: the backlog by status (shared, a manager of fr and sn
# reads it), the unassigned queue of one team, and aged tickets with a field value.
VIEWS: dict[str, dict[str, object]] = {
    "unsolved by status": {"name": "Unsolved", "group_by": "status",
                           "conditions": {"status_below": "solved"}},
    "unassigned, group fr": {"name": "Queue fr", "conditions": {
        "status_below": "solved", "group": ["fr"], "unassigned": True}},
    "red, country sn": {"name": "Late sn", "conditions": {
        "aging": ["red"], "fields": {"country": "sn"}}},
}
SCOPE = frozenset({"", "fr", "sn"})


@dataclass(frozen=True, kw_only=True)
class ViewsConfig:
    small: int = 1_000
    big: int = 100_000
    page: int = 50
    iterations: int = 300
    warmup: int = 30


SMOKE = ViewsConfig(small=200, big=2_000, iterations=10, warmup=2)
QUICK = ViewsConfig(big=20_000, iterations=100, warmup=10)


async def bulk_tickets(client: redis.asyncio.Redis, count: int, now_ms: int) -> None:
    """`count` tickets over the last two days, one per contact, every tenth field value."""
    for start in range(0, count, 2000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + 2000)):
                tid, cid = str(i + 1), f"bench{i:07d}"
                status = STATUS_MIX[i % len(STATUS_MIX)]
                country = COUNTRIES[i % len(COUNTRIES)]
                created = now_ms - (count - i) * (48 * 3600 * 1000 // count)
                pipe.hset(keys.ticket(cid, tid), mapping={
                    "id": tid, "contact_id": cid, "channel": "whatsapp",
                    "status": status.value, "session": "active", "created_at_ms": created,
                    "updated_at_ms": created, "message_count": 1, "version": 1,
                    "group": GROUPS[i % len(GROUPS)], "assignee": AGENTS[i % len(AGENTS)],
                    "tags": "[]", "fields": json.dumps({"country": country} if country else {})})
                pipe.hset(keys.TICKET_CONTACT, tid, cid)
                for index in (keys.index("all"), keys.index("status", status.value)):
                    pipe.zadd(index, {tid: int(tid)})
            await pipe.execute()


@dataclass(frozen=True)
class Outcome:
    read_ms: dict[str, dict[str, float]]  # "<view>/<size>" -> summary
    build_s: dict[str, float]  # "<view>/<size>" -> seconds to build the view's sets
    counts: dict[str, int]


async def measure_async(cfg: ViewsConfig, url: str) -> Outcome:
    clients = {size: redis.asyncio.Redis.from_url(url.rsplit("/", 1)[0] + f"/{db}")
               for db, size in ((1, cfg.small), (2, cfg.big))}
    now = int(time.time() * 1000)
    try:
        built: dict[tuple[str, int], View] = {}
        build_s: dict[str, float] = {}
        for size, client in clients.items():
            await client.flushdb()
            await bulk_tickets(client, size, now)
            for n, (label, body) in enumerate(VIEWS.items(), 1):
                view = parse_view(str(n), "", body)
                t0 = time.perf_counter()
                await ViewStore(client).rebuild(view, bench_store(client))
                build_s[f"{label}/{size}"] = time.perf_counter() - t0
                built[label, size] = view

        def read(size: int, view: View) -> Callable[[], Awaitable[object]]:
            client = clients[size]
            views, store = ViewStore(client), bench_store(client)

            async def once() -> int:
                low, high = aging_range(view.conditions.aging, now_ms=now,
                                        yellow_after_s=YELLOW_S, red_after_s=RED_S)
                counts = await views.counts(view, low, high, SCOPE)
                ids, _ = await views.page(view, low_ms=low, high_ms=high, scope=SCOPE,
                                          group=None, cursor=None, limit=cfg.page)
                tickets = await store.get_tickets(ids)
                assert len(tickets) == min(cfg.page, sum(counts.values()))
                return sum(counts.values())
            return once

        variants = {f"{label}/{size}": read(size, view) for (label, size), view in built.items()}
        counts: dict[str, int] = {}
        for name, fn in variants.items():
            value = await fn()
            assert isinstance(value, int)
            counts[name] = value
        times = await interleaved(variants, cfg.iterations, cfg.warmup)
        return Outcome({k: summary_ms(v) for k, v in times.items()}, build_s, counts)
    finally:
        for c in clients.values():
            await c.aclose()


def measure(cfg: ViewsConfig, workdir: Path) -> Outcome:
    with EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        return asyncio.run(measure_async(cfg, rds.url))


def rows(o: Outcome, cfg: ViewsConfig) -> list[Row]:
    out = []
    for label in VIEWS:
        big, small = o.read_ms[f"{label}/{cfg.big}"], o.read_ms[f"{label}/{cfg.small}"]
        out.append(Row(
            bench="views", name=f"view '{label}': count + first {cfg.page}, "
                                f"{cfg.big:,} tickets (mean)",
            value=big["mean"], unit="ms", baseline=small["mean"],
            baseline_name=f"same at {cfg.small:,} tickets",
            target=Target(op="<=", threshold=1.5, on="ratio")))
    return out


def sections(ctx: Context, o: Outcome, cfg: ViewsConfig) -> None:
    head = ["View / tickets", "count", "mean ms", "p50 ms", "p99 ms", "build s"]
    lines = [[f"{name.replace('/', ' / ')}", f"{o.counts[name]:,}", fmt(s["mean"]),
              fmt(s["p50"]), fmt(s["p99"]), fmt(o.build_s[name])]
             for name, s in o.read_ms.items()]
    ctx.add_section("Saved view details", "\n".join([
        "In-process `ViewStore` and `TicketStore` calls against the embedded Redis on "
        "loopback, as `GET /api/v1/views/{id}/tickets` makes them for a manager of groups fr "
        "and sn: the view's count (per part in scope), the first page of "
        f"{cfg.page} merged from the parts, and its tickets. Tickets span the last 48 hours "
        "over four groups, six assignees and a country field; 'build' is `rebuild` (saving "
        "the view) from every ticket.",
        "",
        table(head, lines),
    ]))


def run(ctx: Context, cfg: ViewsConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else ViewsConfig())
    ctx.log(f"  views: {cfg.small:,} and {cfg.big:,} tickets, {len(VIEWS)} views")
    outcome = measure(cfg, ctx.workdir / "views")
    sections(ctx, outcome, cfg)
    return rows(outcome, cfg)
