"""Ingest: signed Twilio webhooks verified, routed and stored per second by ONE bridge web
process, against a bare aiohttp handler that only parses the same form (DESIGN §8).

Set-up: an embedded Redis with AOF on (appendfsync everysec, as in production), one
`python -m bridge serve` process and one `python -m bench.baseline_server` process. When
the machine has two or more CPUs the server under test runs alone on the first one, and
the load generator (bench/loadgen.py, its own process) and Redis share the others: a web
dyno does not host its Redis, and the generator must not steal the server's core.

Phases, every one bounded in request count and in time:
1. warm-up, closed loop, each server (this first touches every contact: the tickets exist
   afterwards, so the measured traffic mostly appends to open tickets, as in production);
2. max rate: `rounds` alternating closed-loop rounds, baseline then bridge, so slow spells
   of a shared machine hit both; the best round of each is kept (noise only slows down);
3. latency: open loop (constant arrival rate) at half the bridge's max rate, bridge and
   then baseline at the same rate (the baseline shows the generator's own floor), in
   `latency_rounds` alternating rounds: a p99 is a tail, and one slow spell of a shared
   machine moves it several-fold, so the median of the rounds' p50 and p99 is reported;
4. a sweep of offered loads (fractions of the max) for docs/ingest-latency.svg;
5. correctness: customer_message events stored in Redis == 200 answers received.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.data import CONTACT_KEY
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.procs import Server, cpu_layout, own_affinity, python_module
from bench.report import Context, Row, Target, fmt, table
from bench.svg import Series, line_chart
from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis, free_port

PUBLIC_BASE_URL = "https://bridge.example.com"
TOKEN = "bench-auth-token-" + "0123456789abcdef"
BASELINE_NAME = "bare aiohttp: parse form + empty TwiML"
SVG_NAME = "ingest-latency.svg"


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    contacts: int = 1000
    concurrency: int = 64  # connections, closed and open loop alike
    warmup_s: float = 3.0
    rounds: int = 3
    round_s: float = 4.0
    round_warmup_s: float = 1.0  # per round (fresh connections), not counted
    latency_rounds: int = 3
    latency_s: float = 5.0  # bridge, open loop at half the max rate, per round
    baseline_latency_s: float = 3.0
    sweep: tuple[float, ...] = (0.1, 0.25, 0.75, 0.9)  # 0.5 is the latency phase
    sweep_s: float = 5.0
    # Bound on requests generated per closed-loop second: a pool that runs out ends the
    # phase early (reported), it never cycles requests.
    max_rate: float = 30_000.0
    timeout_s: float = 10.0
    write_svg: bool = True


SMOKE = IngestConfig(contacts=20, concurrency=4, warmup_s=0, rounds=1, round_s=0.5,
                     round_warmup_s=0.2, latency_rounds=1, latency_s=0.5,
                     baseline_latency_s=0.3, sweep=(),
                     max_rate=30_000, write_svg=False)
QUICK = IngestConfig(warmup_s=1.5, rounds=2, round_s=2.0, round_warmup_s=0.5, latency_rounds=2,
                     latency_s=2.0, baseline_latency_s=1.0, sweep=(0.25, 0.9), sweep_s=2.0)


@dataclass(frozen=True)
class Outcome:
    """Everything measured, for the rows and for the smoke test."""

    base_rounds: list[LoadResult]
    bridge_rounds: list[LoadResult]
    latency_rounds: list[LoadResult]  # bridge, open loop at half the max rate
    base_latency_rounds: list[LoadResult]
    sweep: list[LoadResult]
    acknowledged: int  # 200 answers from the bridge, every phase
    bridge_errors: int  # non-200 answers and failures from the bridge, every phase
    base_errors: int
    stored: int  # customer_message events found in Redis afterwards
    distinct_sids: int  # distinct provider ids among them
    layout: str


class _Runner:
    def __init__(self, cfg: IngestConfig, cpus: list[int] | None) -> None:
        self.cfg = cfg
        self.cpus = cpus
        self.nonce = secrets.token_hex(4)
        self.phase = 0

    def spec(self, port: int, watch: dict[str, int], **kw: Any) -> LoadSpec:
        self.phase += 1
        return LoadSpec(
            port=port, concurrency=self.cfg.concurrency, token=TOKEN,
            public_base_url=PUBLIC_BASE_URL, contacts=self.cfg.contacts,
            sid_prefix=f"{self.nonce}{self.phase:04x}", seed=self.phase,
            timeout_s=self.cfg.timeout_s, watch_pids=watch, cpus=self.cpus, **kw,
        )

    def closed(self, port: int, watch: dict[str, int], duration: float, warmup: float,
               rate_cap: float | None = None) -> LoadResult:
        """rate_cap bounds the request pool (generating it takes ~10 µs a request)."""
        n = int(min(rate_cap or self.cfg.max_rate, self.cfg.max_rate) * (duration + warmup)) + 100
        return run_load(self.spec(port, watch, mode="closed", duration_s=duration,
                                  warmup_s=warmup, max_requests=n))

    def open(self, port: int, watch: dict[str, int], rate: float, duration: float
             ) -> LoadResult:
        n = int(rate * duration) + 1
        return run_load(self.spec(port, watch, mode="open", rate=rate, duration_s=duration,
                                  max_requests=n))


def count_stored(url: str) -> tuple[int, int]:
    """(customer_message events, distinct provider ids) over every ticket stream."""
    client = redis.Redis.from_url(url)
    count = 0
    sids: set[str] = set()
    try:
        for key in client.scan_iter(match=keys.EVENT_STREAMS_GLOB, count=1000):
            start = "-"
            while True:
                batch = client.xrange(key, start, "+", count=2000)
                for _eid, fields in batch:
                    if fields.get(b"type") == b"customer_message":
                        count += 1
                        sids.add(json.loads(fields.get(b"data", b"{}")).get("provider_id", ""))
                if len(batch) < 2000:
                    break
                start = "(" + batch[-1][0].decode()
    finally:
        client.close()
    return count, len(sids)


def measure(cfg: IngestConfig, workdir: Path, *, pin: bool = True,
            log: Callable[[str], None] = print) -> Outcome:
    layout_cpus = cpu_layout() if pin else None
    server_cpus, other_cpus = layout_cpus if layout_cpus else (None, None)
    layout = (f"server under test on CPU {server_cpus}, load generator and Redis on CPU "
              f"{other_cpus}" if layout_cpus else "no CPU pinning")
    runner = _Runner(cfg, other_cpus)
    workdir.mkdir(parents=True, exist_ok=True)
    with own_affinity(other_cpus), EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        assert rds.process is not None
        redis_pid = rds.process.pid
        base_port, bridge_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_"))}
        env.update(REDIS_URL=rds.url, PORT=str(bridge_port), HOST="127.0.0.1",
                   PUBLIC_BASE_URL=PUBLIC_BASE_URL, TWILIO_AUTH_TOKEN=TOKEN,
                   BRIDGE_DATA_DIR=str(workdir / "var"), BRIDGE_CONTACT_KEY=CONTACT_KEY)
        base = Server("baseline", python_module("bench.baseline_server", "--port",
                                                str(base_port)),
                      port=base_port, log_path=workdir / "baseline.log")
        bridge = Server("bridge", python_module("bridge", "serve"), port=bridge_port,
                        log_path=workdir / "bridge.log", env=env)
        with base, bridge:
            base.start(cpus=server_cpus)
            bridge.start(cpus=server_cpus)
            bw = {"server": base.pid}
            rw = {"server": bridge.pid, "redis": redis_pid}
            bridge_runs: list[LoadResult] = []
            base_runs: list[LoadResult] = []

            log(f"  ingest: warm-up {cfg.warmup_s:g}s each ({layout})")
            # Request pools for the rounds: 6x the warm-up's rate (a pool that runs out
            # ends its phase early, and is reported). The bridge's warm-up opens every
            # contact's first ticket, so it runs well below the rounds' rate of appends.
            base_cap = bridge_cap = cfg.max_rate
            if cfg.warmup_s > 0:
                base_runs.append(runner.closed(base_port, bw, cfg.warmup_s, 0))
                bridge_runs.append(runner.closed(bridge_port, rw, cfg.warmup_s, 0))
                base_cap = max(2000.0, 6 * base_runs[-1].rate)
                bridge_cap = max(2000.0, 6 * bridge_runs[-1].rate)
            base_rounds: list[LoadResult] = []
            bridge_rounds: list[LoadResult] = []
            for i in range(cfg.rounds):
                b = runner.closed(base_port, bw, cfg.round_s, cfg.round_warmup_s, base_cap)
                r = runner.closed(bridge_port, rw, cfg.round_s, cfg.round_warmup_s, bridge_cap)
                base_rounds.append(b)
                bridge_rounds.append(r)
                log(f"  ingest: round {i + 1}/{cfg.rounds}: baseline {b.rate:,.0f}/s "
                    f"(server CPU {b.cpu_percent.get('server', 0):.0f}%), bridge "
                    f"{r.rate:,.0f}/s (server CPU {r.cpu_percent.get('server', 0):.0f}%)")
            base_runs += base_rounds
            bridge_runs += bridge_rounds
            max_bridge = max(r.rate for r in bridge_rounds)
            half = max_bridge / 2
            latency_rounds: list[LoadResult] = []
            base_latency_rounds: list[LoadResult] = []
            for i in range(cfg.latency_rounds):
                latency = runner.open(bridge_port, rw, half, cfg.latency_s)
                log(f"  ingest: open loop at {half:,.0f}/s, round {i + 1}/"
                    f"{cfg.latency_rounds}: bridge p50 {latency.latency_ms['p50']:.2f} ms "
                    f"p99 {latency.latency_ms['p99']:.2f} ms")
                latency_rounds.append(latency)
                base_latency_rounds.append(
                    runner.open(base_port, bw, half, cfg.baseline_latency_s))
            bridge_runs += latency_rounds
            base_runs += base_latency_rounds
            sweep = []
            for f in cfg.sweep:
                res = runner.open(bridge_port, rw, f * max_bridge, cfg.sweep_s)
                log(f"  ingest: sweep {f:.0%} ({f * max_bridge:,.0f}/s): p50 "
                    f"{res.latency_ms['p50']:.2f} ms p99 {res.latency_ms['p99']:.2f} ms")
                sweep.append(res)
            bridge_runs += sweep
            # Stop the bridge before counting: nothing is in flight any more.
            bridge.stop()
            if any(r.pool_exhausted for r in [*bridge_runs, *base_runs]):
                log("  ingest: warning: a request pool ran out before the end of its phase")
        stored, distinct = count_stored(rds.url)
    return Outcome(
        base_rounds=base_rounds, bridge_rounds=bridge_rounds, latency_rounds=latency_rounds,
        base_latency_rounds=base_latency_rounds, sweep=sweep,
        acknowledged=sum(r.ok for r in bridge_runs),
        bridge_errors=sum(r.errors for r in bridge_runs),
        base_errors=sum(r.errors for r in base_runs),
        stored=stored, distinct_sids=distinct, layout=layout,
    )


def cpu_us_per_request(r: LoadResult) -> float:
    """Server CPU time per 200 answer over the measured window (µs): unlike the rate, it
    barely moves when other processes take CPU away from the server."""
    if "server" not in r.cpu_percent or not r.window_ok:
        return math.nan
    return r.cpu_percent["server"] / 100 * r.window_s / r.window_ok * 1e6


def _median_measured(values: Iterable[float]) -> float:
    """The median of the rounds whose CPU could be read (a NaN sorts anywhere)."""
    measured = [v for v in values if math.isfinite(v)]
    return statistics.median(measured) if measured else math.nan


def others_percent(runs: list[LoadResult]) -> float:
    """Mean CPU used by other processes of the machine during these windows (% of a core)."""
    values = [r.cpu_percent["others"] for r in runs if "others" in r.cpu_percent]
    return sum(values) / len(values) if values else math.nan


def rows(o: Outcome) -> list[Row]:
    best_base = max(o.base_rounds, key=lambda r: r.rate)
    best_bridge = max(o.bridge_rounds, key=lambda r: r.rate)
    half = o.latency_rounds[0].offered_rate

    def median_ms(runs: list[LoadResult], q: str) -> float:
        return statistics.median(r.latency_ms[q] for r in runs)

    lat = {q: median_ms(o.latency_rounds, q) for q in ("p50", "p99")}
    blat = {q: median_ms(o.base_latency_rounds, q) for q in ("p50", "p99")}
    of_rounds = f", median of {len(o.latency_rounds)} rounds" if len(o.latency_rounds) > 1 \
        else ""
    return [
        Row(bench="ingest", name="signed webhooks/s, one web process (max, closed loop)",
            value=best_bridge.rate, unit="req/s", baseline=best_base.rate,
            baseline_name=BASELINE_NAME, target=Target(op=">=", threshold=0.30, on="ratio")),
        Row(bench="ingest", name="server CPU time per webhook (median of rounds)",
            value=_median_measured(cpu_us_per_request(r) for r in o.bridge_rounds),
            unit="µs", baseline=_median_measured(cpu_us_per_request(r)
                                                 for r in o.base_rounds),
            baseline_name=BASELINE_NAME),
        Row(bench="ingest",
            name=f"p50 latency at half max ({half:,.0f} req/s, open loop{of_rounds})",
            value=lat["p50"], unit="ms", baseline=blat["p50"],
            baseline_name="baseline at the same rate"),
        Row(bench="ingest",
            name=f"p99 latency at half max ({half:,.0f} req/s, open loop{of_rounds})",
            value=lat["p99"], unit="ms", baseline=blat["p99"],
            baseline_name="baseline at the same rate", target=Target(op="<", threshold=20)),
        Row(bench="ingest", name="bridge non-200 answers and failures, all phases",
            value=o.bridge_errors, unit="req", baseline=o.base_errors,
            baseline_name="baseline, all phases", target=Target(op="==", threshold=0)),
        Row(bench="ingest", name="customer_message events stored vs 200 answers",
            value=o.stored, unit="events", baseline=o.acknowledged,
            baseline_name="200 answers", target=Target(op="==", threshold=1.0, on="ratio"),
            note=f"{o.distinct_sids} distinct MessageSids stored"),
    ]


def median_round(runs: list[LoadResult]) -> LoadResult:
    """The round whose p99 is the median (the sweep's point at half the max rate)."""
    return sorted(runs, key=lambda r: r.latency_ms["p99"])[len(runs) // 2]


def _result_line(label: str, r: LoadResult) -> list[str]:
    cpu = r.cpu_percent
    errs = r.errors
    if r.pool_exhausted:
        label += " (request pool ran out early)"
    return [label, f"{r.rate:,.0f}", fmt(r.latency_ms["p50"]), fmt(r.latency_ms["p99"]),
            f"{cpu.get('server', 0):.0f}%", f"{cpu.get('loadgen', 0):.0f}%",
            f"{cpu['redis']:.0f}%" if "redis" in cpu else "—",
            f"{cpu['others']:.0f}%" if "others" in cpu else "—", str(errs)]


def sections(ctx: Context, o: Outcome, cfg: IngestConfig) -> None:
    head = ["Phase", "200/s", "p50 ms", "p99 ms", "server CPU", "generator CPU",
            "Redis CPU", "other processes CPU", "errors"]
    lines = []
    for i, (b, r) in enumerate(zip(o.base_rounds, o.bridge_rounds, strict=True), 1):
        lines.append(_result_line(f"round {i}: baseline (closed, {b.concurrency} conns)", b))
        lines.append(_result_line(f"round {i}: bridge (closed, {r.concurrency} conns)", r))
    for i, (r, b) in enumerate(zip(o.latency_rounds, o.base_latency_rounds, strict=True), 1):
        lines.append(_result_line(f"open loop {r.offered_rate:,.0f}/s, round {i}: bridge", r))
        lines.append(_result_line(f"open loop {b.offered_rate:,.0f}/s, round {i}: baseline",
                                  b))
    points = sorted([median_round(o.latency_rounds), *o.sweep], key=lambda r: r.offered_rate)
    max_bridge = max(r.rate for r in o.bridge_rounds)
    sweep_lines = [[f"{r.offered_rate / max_bridge:.0%}", f"{r.offered_rate:,.0f}",
                    f"{r.rate:,.0f}", fmt(r.latency_ms["p50"]), fmt(r.latency_ms["p99"]),
                    fmt(r.latency_ms["max"]), str(r.errors)] for r in points]
    noise = others_percent([*o.base_rounds, *o.bridge_rounds, *o.latency_rounds,
                            *o.base_latency_rounds])
    warning = (f"**Noisy run:** other processes used {noise:.0f}% of a core on average "
               "during the measured windows: absolute rates may be lower and latency "
               "percentiles higher than on a quiet machine (ratios suffer less).\n\n"
               if noise > 25 else "")
    text = [
        warning + f"One `bridge serve` web process against `bench/baseline_server.py`, {o.layout}. "
        f"Load: bench/loadgen.py, HTTP/1.1 keep-alive over {cfg.concurrency} connections, "
        f"pre-built correctly signed Twilio WhatsApp inbound forms (unique MessageSid each, "
        f"{cfg.contacts} contacts `whatsapp:+336…`, so after the warm-up nearly every "
        "message appends to an open ticket). Max rate: closed loop, best of "
        f"{cfg.rounds} alternating rounds of {cfg.round_s:g} s (after {cfg.round_warmup_s:g} s "
        "not counted). Latency: open loop (constant arrival rate, measured from the "
        "scheduled send time, so queueing counts), "
        f"{cfg.latency_rounds} alternating rounds of {cfg.latency_s:g} s (bridge) and "
        f"{cfg.baseline_latency_s:g} s (baseline); the results table gives the median of "
        "the rounds' p50 and p99. CPU is % of one core over the measured "
        "window; \"other processes\" is what the rest of the machine used meanwhile "
        "(other tenants of a shared machine: high values mean a noisy run).",
        "",
        table(head, lines),
        "",
        "Server CPU time per webhook (in the results table) is the steadier figure on a "
        "shared machine: other processes take CPU time away from the server, which lowers "
        "its rate but not the CPU each request costs. When the server is CPU-bound, the 30% "
        "target means at most 3.3× the baseline's CPU time per request.",
        "",
        f"Correctness: {o.stored:,} customer_message events stored for {o.acknowledged:,} "
        f"200 answers ({o.distinct_sids:,} distinct MessageSids); {o.bridge_errors} bridge "
        "errors.",
    ]
    if points and len(points) > 1:
        text += [
            "",
            f"### Latency against offered load\n\n![ingest latency]({SVG_NAME})\n",
            table(["of max", "offered/s", "answered/s", "p50 ms", "p99 ms", "max ms",
                   "errors"], sweep_lines),
        ]
    ctx.add_section("Ingest details", "\n".join(text))


def write_svg(path: Path, o: Outcome) -> None:
    points = sorted([median_round(o.latency_rounds), *o.sweep], key=lambda r: r.offered_rate)
    max_bridge = max(r.rate for r in o.bridge_rounds)
    svg = line_chart(
        [Series("p50", "#2c7fb8", [(r.offered_rate, r.latency_ms["p50"]) for r in points]),
         Series("p99", "#e6550d", [(r.offered_rate, r.latency_ms["p99"]) for r in points])],
        title=f"Ingest latency, one web process (max {max_bridge:,.0f} webhooks/s)",
        x_label="offered load (signed webhooks/s, constant arrival rate)",
        y_label="latency (ms, log scale)",
        hline=(20.0, "p99 target 20 ms"),
    )
    path.write_text(svg)


def run(ctx: Context, cfg: IngestConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else IngestConfig())
    outcome = measure(cfg, ctx.workdir / "ingest", pin=ctx.pin_cpus, log=ctx.log)
    if cfg.write_svg and outcome.sweep:
        write_svg(ctx.docs_dir / SVG_NAME, outcome)
    sections(ctx, outcome, cfg)
    return rows(outcome)

