"""Reports (DESIGN §8): a 30-day report over 100,000 tickets costs no more than 1.5x one over
1,000, because it reads the counters the change log keeps (bridge/store/report_counters.py),
a fixed number of keys per hour and per channel or agent, whatever the number of tickets.

Each ticket's history (opening, first reply, pending and back, solve, sometimes a reopen and
a second solve, a survey, a rating) is run through the consumer's own path: the pure
`step` of bridge/core/report_counts.py, then ReportCounters.apply, many tickets per
transaction to keep the set-up short. Both databases have the same agents and channels and
histories spread over the same 32 days; the report is the 30 days in Europe/Paris (hours at
the edges, whole UTC days inside). Timings are interleaved so a noisy neighbour slows both.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio

from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bench.threads import interleaved
from bridge.core.report_counts import (
    Created,
    Fact,
    Increment,
    PublicReply,
    Rated,
    StatusTo,
    SurveySent,
    TicketFigures,
    step,
)
from bridge.report_query import build_report, parse_period
from bridge.store.embedded import EmbeddedRedis
from bridge.store.report_counters import ReportCounters

AGENTS = ("alice", "bruno", "chloe", "david", "emma", "farid", "gina", "hugo")
MIN_MS = 60_000
HOUR_MS = 60 * MIN_MS
END = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class ReportsConfig:
    small: int = 1_000
    big: int = 100_000
    iterations: int = 60
    warmup: int = 5
    batch: int = 500  # tickets per transaction while filling


SMOKE = ReportsConfig(small=50, big=400, iterations=3, warmup=1)
QUICK = ReportsConfig(big=20_000, iterations=20)


def history(rng: random.Random, start_ms: int, span_ms: int) -> list[Fact]:
    """One ticket's life, with a help desk's proportions."""
    created = start_ms + rng.randrange(span_ms)
    channel = "whatsapp" if rng.random() < 0.8 else "widget"
    agent = rng.choice(AGENTS)
    at = created + int(rng.expovariate(1 / (40 * MIN_MS)))
    facts: list[Fact] = [Created(created, channel), PublicReply(at, agent)]
    if rng.random() < 0.3:
        at += rng.randrange(10 * MIN_MS, 6 * HOUR_MS)
        facts.append(StatusTo(at, "pending"))
        at += rng.randrange(10 * MIN_MS, 12 * HOUR_MS)
        facts.append(StatusTo(at, "open"))
    if rng.random() < 0.75:
        at += rng.randrange(10 * MIN_MS, 30 * HOUR_MS)
        facts.append(StatusTo(at, "solved", agent))
        if rng.random() < 0.1:
            at += rng.randrange(HOUR_MS, 24 * HOUR_MS)
            facts += [StatusTo(at, "open"), PublicReply(at + 5 * MIN_MS, agent)]
            at += rng.randrange(HOUR_MS, 24 * HOUR_MS)
            facts.append(StatusTo(at, "solved", agent))
        if rng.random() < 0.6:
            facts.append(SurveySent(at))
            if rng.random() < 0.4:
                facts.append(Rated(at + rng.randrange(MIN_MS, 6 * HOUR_MS),
                                   rng.choice((1, 2, 3, 4, 5, 5, 4, 5))))
    return facts


async def fill(client: redis.asyncio.Redis, tickets: int, cfg: ReportsConfig, seed: int
               ) -> None:
    counters = ReportCounters(client)
    rng = random.Random(seed)
    span_ms = 32 * 24 * HOUR_MS
    start_ms = int((END - timedelta(days=32)).timestamp() * 1000)
    batch: list[tuple[str, TicketFigures, str, list[Increment]]] = []
    for n in range(tickets):
        figures = TicketFigures()
        increments: list[Increment] = []
        facts = history(rng, start_ms, span_ms)
        for fact in facts:
            figures, moved = step(figures, fact)
            increments += moved
        batch.append((str(n + 1), figures, f"{facts[-1].at_ms}-0", increments))
        if len(batch) >= cfg.batch:
            await counters.apply(batch)
            batch = []
    await counters.apply(batch)


@dataclass(frozen=True)
class Outcome:
    small_ms: dict[str, float]
    big_ms: dict[str, float]
    created: tuple[int, int]


async def measure_async(cfg: ReportsConfig, url: str) -> Outcome:
    base = url.rsplit("/", 1)[0]
    small, big = (redis.asyncio.Redis.from_url(f"{base}/{db}") for db in (0, 1))
    try:
        for client in (small, big):
            await client.flushdb()
        await fill(small, cfg.small, cfg, seed=1)
        await fill(big, cfg.big, cfg, seed=2)
        period = parse_period(since=(END - timedelta(days=30)).date().isoformat(),
                              until=END.date().isoformat(), tz="Europe/Paris")
        created = []
        for client in (small, big):
            report = await build_report(client, period)
            created.append(report["tickets"]["created"])
        times = await interleaved({"small": lambda: build_report(small, period),
                                   "big": lambda: build_report(big, period)},
                                  cfg.iterations, cfg.warmup)
        return Outcome(summary_ms(times["small"]), summary_ms(times["big"]),
                       (created[0], created[1]))
    finally:
        for client in (small, big):
            await client.aclose()


def measure(cfg: ReportsConfig, workdir: Path) -> Outcome:
    with EmbeddedRedis(workdir / "redis-reports", appendonly=False) as rds:
        return asyncio.run(measure_async(cfg, rds.url))


def rows(o: Outcome, cfg: ReportsConfig) -> list[Row]:
    return [
        Row(bench="reports", name=f"30-day report, {cfg.big:,} tickets (mean)",
            value=o.big_ms["mean"], unit="ms", baseline=o.small_ms["mean"],
            baseline_name=f"same report, {cfg.small:,} tickets",
            target=Target(op="<=", threshold=1.5, on="ratio")),
        Row(bench="reports", name=f"30-day report, {cfg.big:,} tickets (p99)",
            value=o.big_ms["p99"], unit="ms", baseline=o.small_ms["p99"],
            baseline_name=f"same report, {cfg.small:,} tickets"),
    ]


def run(ctx: Context) -> list[Row]:
    cfg = QUICK if ctx.quick else ReportsConfig()
    ctx.log(f"reports: filling counters for {cfg.small:,} and {cfg.big:,} tickets")
    outcome = measure(cfg, ctx.workdir)
    head = ["Tickets", "created in the period", "mean ms", "p50 ms", "p99 ms", "samples"]
    body = [[f"{n:,}", f"{c:,}", fmt(s["mean"]), fmt(s["p50"]), fmt(s["p99"]), str(s["n"])]
            for n, c, s in ((cfg.small, outcome.created[0], outcome.small_ms),
                            (cfg.big, outcome.created[1], outcome.big_ms))]
    ctx.add_section("Reports from the change log's counters", (
        "A 30-day report (Europe/Paris) read from the per-hour counters, over 1,000 and "
        "100,000 tickets whose histories went through the report consumer's own path "
        "(bench/reports.py).\n\n" + table(head, body)))
    return rows(outcome, cfg)
