"""The ingest benchmark's rows, details section and latency plot (bench/ingest.py measures)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.loadgen import LoadResult
from bench.report import Context, Row, Target, fmt, table
from bench.svg import Series, line_chart

if TYPE_CHECKING:
    from bench.ingest import IngestConfig, Outcome, Workload

BASELINE_NAME = "bare aiohttp: parse form + empty TwiML"
SVG_NAME = "ingest-latency.svg"
# DESIGN §8, against the baseline's max rate in the same run.
APPENDS_RATIO = 0.40
NEW_RATIO = 0.20
NEW_VS_APPENDS = 0.5
P99_MS = 20.0

TITLES = {"appends": "appends to open tickets", "new": "new conversations"}
# A max-rate round that ends with the relay further behind than this did not have it
# reading the log as it would (it reads every 100 ms under load, workers/relay.py); 1 s
# is also the relay's own bar for commit -> job enqueued (bench/relay.py).
RELAY_LAG_LIMIT_S = 1.0


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
    """Mean CPU taken from the bench during these windows (% of a core): by the machine's
    other processes, and by the hypervisor for other virtual machines (steal)."""
    values = [r.cpu_percent["others"] + r.cpu_percent.get("steal", 0.0)
              for r in runs if "others" in r.cpu_percent]
    return sum(values) / len(values) if values else math.nan


def _median_ms(runs: list[LoadResult], q: str) -> float:
    return statistics.median(r.latency_ms[q] for r in runs)


def _latency_rows(w: Workload) -> list[Row]:
    half = w.latency_rounds[0].offered_rate
    rounds = len(w.latency_rounds)
    of_rounds = f", median of {rounds} rounds" if rounds > 1 else ""
    out = []
    for q in ("p50", "p99"):
        out.append(Row(
            bench="ingest",
            name=f"{TITLES[w.name]}: {q} latency at half max ({half:,.0f} req/s, open loop"
                 f"{of_rounds})",
            value=_median_ms(w.latency_rounds, q), unit="ms",
            baseline=_median_ms(w.base_latency_rounds, q),
            baseline_name="baseline at the same rate",
            target=Target(op="<", threshold=P99_MS) if q == "p99" else None))
    return out


def median_pair(measured: list[LoadResult], reference: list[LoadResult]
                ) -> tuple[LoadResult, LoadResult]:
    """The round whose measured/reference rate ratio is the median of the rounds' ratios.
    A round's closed loops run back to back, so the machine's speed at that moment shows on
    both sides and divides out; a fast or slow spell moves one round's pair, not the
    median."""
    pairs = sorted(zip(measured, reference, strict=True),
                   key=lambda pair: pair[0].rate / pair[1].rate if pair[1].rate else 0.0)
    return pairs[len(pairs) // 2]


def rows(o: Outcome) -> list[Row]:
    base_cpu = _median_measured(cpu_us_per_request(r) for r in o.base_rounds)
    rounds = len(o.base_rounds)
    of = f", round with the median ratio of {rounds}" if rounds > 1 else ""
    appends, base_a = median_pair(o.appends.rounds, o.base_rounds)
    new, base_n = median_pair(o.new.rounds, o.base_rounds)
    new_vs, appends_vs = median_pair(o.new.rounds, o.appends.rounds)
    out = [
        Row(bench="ingest",
            name=f"appends to open tickets/s, one web process (max, closed loop{of})",
            value=appends.rate, unit="req/s", baseline=base_a.rate,
            baseline_name=BASELINE_NAME + ", same round",
            target=Target(op=">=", threshold=APPENDS_RATIO, on="ratio")),
        Row(bench="ingest",
            name="new conversations/s (each message from a new contact), one web process "
                 f"(max, closed loop{of})",
            value=new.rate, unit="req/s", baseline=base_n.rate,
            baseline_name=BASELINE_NAME + ", same round",
            target=Target(op=">=", threshold=NEW_RATIO, on="ratio")),
        Row(bench="ingest", name=f"new conversations/s vs appends/s (max rates{of})",
            value=new_vs.rate, unit="req/s", baseline=appends_vs.rate,
            baseline_name="appends to open tickets, same round",
            target=Target(op=">=", threshold=NEW_VS_APPENDS, on="ratio")),
    ]
    for w in (o.appends, o.new):
        out.append(Row(
            bench="ingest", name=f"{TITLES[w.name]}: server CPU time per webhook "
                                 "(median of rounds)",
            value=_median_measured(cpu_us_per_request(r) for r in w.rounds), unit="µs",
            baseline=base_cpu, baseline_name=BASELINE_NAME))
    out += _latency_rows(o.appends) + _latency_rows(o.new)
    out += [
        Row(bench="ingest", name="bridge non-200 answers and failures, all phases",
            value=o.bridge_errors, unit="req", baseline=o.base_errors,
            baseline_name="baseline, all phases", target=Target(op="==", threshold=0)),
        Row(bench="ingest", name="customer_message events stored vs 200 answers",
            value=o.stored, unit="events", baseline=o.acknowledged,
            baseline_name="200 answers", target=Target(op="==", threshold=1.0, on="ratio"),
            note=f"{o.distinct_sids} distinct MessageSids stored"),
        Row(bench="ingest",
            name="relay behind the change log at the end of a max-rate round (worst of "
                 f"{2 * rounds}: its oldest entry not handed on)",
            value=max(lag.oldest_s for w in (o.appends, o.new) for lag in w.relay_lag_rounds),
            unit="s", target=Target(op="<=", threshold=RELAY_LAG_LIMIT_S),
            note="the worker and the relay run at nice 19: this shows the relay still "
                 "kept up while the max rate was measured"),
        Row(bench="ingest",
            name="change log entries the relay had not handed on once the load stopped "
                 f"(after {o.relay_drain_s:.1f} s)",
            value=o.relay_pending, unit="entries", target=Target(op="==", threshold=0)),
    ]
    return out


def median_round(runs: list[LoadResult]) -> LoadResult:
    """The round whose p99 is the median (the sweep's point at half the max rate)."""
    return sorted(runs, key=lambda r: r.latency_ms["p99"])[len(runs) // 2]


def _pct(cpu: dict[str, float], key: str) -> str:
    return f"{cpu[key]:.0f}%" if key in cpu else "—"


def _result_line(label: str, r: LoadResult, relay_behind_s: float | None = None
                 ) -> list[str]:
    cpu = r.cpu_percent
    if r.pool_exhausted:
        label += " (request pool ran out early)"
    return [label, f"{r.rate:,.0f}", fmt(r.latency_ms["p50"]), fmt(r.latency_ms["p99"]),
            _pct(cpu, "server"), _pct(cpu, "loadgen"), _pct(cpu, "redis"),
            _pct(cpu, "worker"), _pct(cpu, "relay"),
            "—" if relay_behind_s is None else f"{fmt(relay_behind_s)} s",
            _pct(cpu, "others"), _pct(cpu, "steal"), str(r.errors)]


def loop_lag_summary(buckets: dict[float, float]) -> tuple[int, int, int, str]:
    """(probes, later than 10 ms, later than 50 ms, the latest's bucket) from one round's
    bridge_event_loop_lag_seconds counts by upper bound."""
    total = int(buckets.get(math.inf, 0))
    if not total:
        return 0, 0, 0, "—"

    def later_than(bound_s: float) -> int:  # counts are cumulative: the nearest bound below
        return total - int(max((count for bound, count in buckets.items() if bound <= bound_s),
                               default=0))

    worst = min(bound for bound, count in buckets.items() if count >= total)
    return (total, later_than(0.01), later_than(0.05),
            f"≤ {fmt(worst * 1000)} ms" if math.isfinite(worst) else "> 10 s")


def _tail_lines(o: Outcome) -> list[list[str]]:
    lines = []
    for w in (o.appends, o.new):
        for i, (r, lag, forks) in enumerate(zip(w.latency_rounds, w.loop_lag_rounds,
                                                w.redis_forks_rounds, strict=True), 1):
            probes, over_10, over_50, worst = loop_lag_summary(lag)
            lines.append([f"{TITLES[w.name]}, {r.offered_rate:,.0f}/s, round {i}",
                          fmt(r.latency_ms["p99"]), fmt(r.latency_ms["max"]), str(probes),
                          str(over_10), str(over_50), worst, _pct(r.cpu_percent, "steal"),
                          _pct(r.cpu_percent, "redis"), str(forks),
                          _pct(r.cpu_percent, "others")])
    return lines


def _rewrites_text(o: Outcome) -> str:
    """What Redis's append-only file rewrites did, and when (bench/aof.py)."""
    done = o.aof_rewrites_s
    when = (f"{len(done)} rewrite{'s' if len(done) > 1 else ''}, {sum(done):.1f} s in all "
            f"(the longest {max(done):.1f} s)" if done else "no rewrite was due")
    during = ("none during a load phase" if o.forks_in_phases == 0 else
              f"**{o.forks_in_phases} fork(s) during the load phases**, not the bench's")
    return (
        "Redis rewrites its append-only file once the file has doubled since the last "
        "rewrite (64 MB at least), in a forked child that would share the CPU of Redis and "
        "the load generator; under this load the file doubles every few phases, so whether "
        "a round held a rewrite was chance (rounds with one measured 0.30-0.36 against "
        "0.37-0.42). The bench therefore turns Redis's automatic rewrite off and applies "
        f"the same rule itself before each load phase, waiting for it to finish: {when}; "
        f"Redis forks: {during}. The column below counts each latency round's forks.")


def sections(ctx: Context, o: Outcome, cfg: IngestConfig) -> None:
    head = ["Phase", "200/s", "p50 ms", "p99 ms", "server CPU", "generator CPU",
            "Redis CPU", "worker CPU", "relay CPU", "relay behind at the end",
            "other processes CPU", "steal", "errors"]
    lines = []
    for i, (b, a, a_lag, n, n_lag) in enumerate(zip(
            o.base_rounds, o.appends.rounds, o.appends.relay_lag_rounds, o.new.rounds,
            o.new.relay_lag_rounds, strict=True), 1):
        lines.append(_result_line(f"round {i}: baseline (closed, {b.concurrency} conns)", b))
        lines.append(_result_line(f"round {i}: appends (closed, {a.concurrency} conns)", a,
                                  a_lag.oldest_s))
        lines.append(_result_line(f"round {i}: new conversations (closed, {n.concurrency} "
                                  "conns)", n, n_lag.oldest_s))
    for w in (o.appends, o.new):
        for i, (r, b) in enumerate(zip(w.latency_rounds, w.base_latency_rounds, strict=True),
                                   1):
            rate = f"{r.offered_rate:,.0f}/s"
            lines.append(_result_line(f"{TITLES[w.name]}, open loop {rate}, round {i}", r))
            lines.append(_result_line(f"baseline, open loop {rate}, round {i}", b))
    max_appends = o.appends.max_rate
    points = sorted([median_round(o.appends.latency_rounds), *o.sweep],
                    key=lambda r: r.offered_rate)
    sweep_lines = [[f"{r.offered_rate / max_appends:.0%}", f"{r.offered_rate:,.0f}",
                    f"{r.rate:,.0f}", fmt(r.latency_ms["p50"]), fmt(r.latency_ms["p99"]),
                    fmt(r.latency_ms["max"]), str(r.errors)] for r in points]
    noise = others_percent([*o.base_rounds, *o.appends.rounds, *o.new.rounds,
                            *o.appends.latency_rounds, *o.new.latency_rounds])
    warning = (f"**Noisy run:** other processes and the hypervisor's steal took {noise:.0f}% "
               "of a core on average "
               "during the measured windows: absolute rates may be lower and latency "
               "percentiles higher than on a quiet machine (ratios suffer less).\n\n"
               if noise > 25 else "")
    text = [
        warning + f"One `bridge serve` web process against `bench/baseline_server.py`, with "
        "`python -m workers` and `python -m workers.relay` running as `make run` runs "
        f"them; {o.layout}. Load: bench/loadgen.py, HTTP/1.1 keep-alive over "
        f"{cfg.concurrency} connections, pre-built correctly signed Twilio WhatsApp inbound "
        "forms, a unique MessageSid each. Two workloads: **appends** (messages from "
        f"{cfg.contacts} contacts `whatsapp:+336…` whose tickets the warm-up opened, so "
        "nearly every message appends to an open ticket) and **new conversations** (every "
        "message from a contact never seen before: a new contact, a new ticket, its "
        "indexes, and a change log entry the relay turns into a ticket.created job). Max "
        f"rate: closed loop, {cfg.rounds} alternating rounds (baseline, appends, new "
        f"conversations) of {cfg.round_s:g} s (after {cfg.round_warmup_s:g} s not counted); "
        "each ratio in the results is the median of the rounds' own ratios (a round's three "
        "loops run back to back, so a fast or slow spell of the shared machine moves both "
        "sides of that round), and a workload's max rate is its median round. "
        "Latency: open loop at half each workload's max rate (constant arrival rate, "
        "measured from the scheduled send time, so queueing counts), "
        f"{cfg.latency_rounds} rounds of {cfg.latency_s:g} s (bridge) alternating with "
        f"{cfg.baseline_latency_s:g} s of the baseline at the same rate; the results table "
        "gives the median of the rounds' p50 and p99. In every phase the worker and the "
        "relay run at the lowest CPU priority (nice 19): on dynos of their own in "
        "production, here they take what Redis and the load generator leave (at the same "
        "priority their batches kept those two waiting, which showed as the bridge's "
        "latency and, in the max-rate rounds, as the web process idling while it waited "
        "for Redis). \"Relay behind at the end\" is the age of the oldest change log entry "
        "the relay had not handed on when the round's load stopped: it stays well under a "
        "second when the relay kept up with the round (it reads every 100 ms under load), "
        f"and a round that ends more than {RELAY_LAG_LIMIT_S:g} s behind fails the bench. "
        "CPU is % of one core over the "
        "measured window (the worker's forked job processes count under \"other "
        "processes\", which is otherwise what the rest of the machine used meanwhile); "
        "steal is the time the hypervisor gave other virtual machines while this one had "
        "work to run (/proc/stat).",
        "",
        table(head, lines),
        "",
        "What the open loop's tail was made of: the web process's event loop is probed every "
        "50 ms (`bridge_event_loop_lag_seconds`, read from its /metrics before and after "
        "each round); a probe woken late means every request the process held waited as "
        "long. Late probes with steal point at the machine, late probes without steal at "
        "the web process itself, and a p99 well above the loop's lag at Redis or the load "
        "generator. " + _rewrites_text(o),
        "",
        table(["Open-loop round (bridge)", "p99 ms", "max ms", "loop probes",
               "probes > 10 ms late", "> 50 ms late", "latest probe", "steal", "Redis CPU",
               "Redis forks (AOF rewrite)", "other processes CPU"],
              _tail_lines(o)),
        "",
        "Server CPU time per webhook (in the results table) is the steadier figure on a "
        "shared machine: other processes take CPU time away from the server, which lowers "
        "its rate but not the CPU each request costs. When the server is CPU-bound, a "
        f"ratio target of {APPENDS_RATIO:.2f} means at most {1 / APPENDS_RATIO:.1f}× the "
        "baseline's CPU time per request.",
        "",
        f"Correctness: {o.stored:,} customer_message events stored for {o.acknowledged:,} "
        f"200 answers ({o.distinct_sids:,} distinct MessageSids, {o.tickets:,} tickets); "
        f"{o.bridge_errors} bridge errors. Once the load stopped the relay caught up in "
        f"{o.relay_drain_s:.1f} s ({o.relay_pending} change log entries left)."
        + (" A request pool ran out before the end of its phase." if o.pool_exhausted
           else ""),
    ]
    if len(points) > 1:
        text += [
            "",
            f"### Latency against offered load (appends)\n\n![ingest latency]({SVG_NAME})\n",
            table(["of max", "offered/s", "answered/s", "p50 ms", "p99 ms", "max ms",
                   "errors"], sweep_lines),
        ]
    ctx.add_section("Ingest details", "\n".join(text))


def write_svg(path: Path, o: Outcome) -> None:
    points = sorted([median_round(o.appends.latency_rounds), *o.sweep],
                    key=lambda r: r.offered_rate)
    svg = line_chart(
        [Series("p50", "#2c7fb8", [(r.offered_rate, r.latency_ms["p50"]) for r in points]),
         Series("p99", "#e6550d", [(r.offered_rate, r.latency_ms["p99"]) for r in points])],
        title=f"Ingest latency, appends, one web process (max {o.appends.max_rate:,.0f} "
              "webhooks/s)",
        x_label="offered load (signed webhooks/s, constant arrival rate)",
        y_label="latency (ms, log scale)",
        hline=(P99_MS, f"p99 target {P99_MS:g} ms"),
    )
    path.write_text(svg)
