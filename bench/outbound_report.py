"""The outbound benchmark's rows and details section (bench/outbound.py measures)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.report import Context, Row, Target, fmt, table

if TYPE_CHECKING:
    from bench.outbound import OutboundConfig, Outcome
    from bench.outbound_driver import Drain

TARGET_RATE = 80.0  # WhatsApp's per-sender ceiling (DESIGN §8)


def _how(cfg: OutboundConfig) -> str:
    if cfg.mode == "processes":
        return f"`python -m workers --processes {cfg.processes}`"
    return f"{cfg.processes} × `python -m workers --{cfg.mode}`"


def rows(o: Outcome) -> list[Row]:
    cfg = o.cfg
    mb = 1024 * 1024
    standalone = o.standalone_memory
    return [
        Row(bench="outbound",
            name=f"sends/s, {_how(cfg)}, stub answering in {cfg.latency_s * 1000:.0f} ms "
                 f"(backlog of {o.sends.jobs:,}, 10-90%)",
            value=o.sends.rate(), unit="msg/s", baseline=o.noop.rate(),
            baseline_name="no-op RQ jobs/s, same processes",
            target=Target(op=">=", threshold=TARGET_RATE)),
        Row(bench="outbound",
            name=f"{cfg.open_rate:g} sends/s offered for {cfg.open_s:g} s: p99 enqueue → "
                 "Twilio's answer recorded",
            value=o.open_latency_ms["p99"], unit="ms", baseline=cfg.latency_s * 1000,
            baseline_name="the stub's answer time",
            note=f"p50 {fmt(o.open_latency_ms['p50'])} ms"),
        Row(bench="outbound", name="worker CPU time per send",
            value=o.sends.cpu_ms_per_job("workers"), unit="ms",
            baseline=o.noop.cpu_ms_per_job("workers"), baseline_name="per no-op RQ job"),
        Row(bench="outbound",
            name=f"memory per worker process, {o.worker_processes} forked by the supervisor "
                 "(PSS)",
            value=o.mean_pss / mb, unit="MiB",
            baseline=standalone.pss / mb if standalone else None,
            baseline_name="one separately started `python -m workers --no-fork`",
            note=f"USS {fmt(o.mean_uss / mb)} MiB, RSS {fmt(o.mean_rss / mb)} MiB; whole "
                 f"tree {fmt(o.tree_pss / mb)} MiB"),
        Row(bench="outbound", name="replies accepted by the stub exactly once, as recorded",
            value=o.accepted_once, unit="replies", baseline=o.events,
            baseline_name="replies enqueued", target=Target(op="==", threshold=1.0,
                                                             on="ratio"),
            note=f"{o.duplicates} duplicates, {o.never_sent} never sent, {o.invalid} "
                 f"invalid, {o.failed_jobs} failed jobs"),
        Row(bench="outbound",
            name=f"SIGTERM with {o.shutdown.in_flight} sends in flight: left `sending`",
            value=o.shutdown.left_sending, unit="sends", target=Target(op="==", threshold=0),
            note=f"stopped in {o.shutdown.stop_s:.1f} s, exit {o.shutdown.codes}"),
    ]


def _cpu_line(label: str, d: Drain, rate: float) -> list[str]:
    c = d.cpu_percent
    return [label, f"{rate:,.0f}", f"{d.window_s:.1f}", f"{c.get('workers', 0):.0f}%",
            fmt(d.cpu_ms_per_job("workers")), f"{c.get('redis', 0):.0f}%",
            f"{c.get('stub', 0):.0f}%", f"{c.get('bench driver', 0):.0f}%",
            f"{c.get('others', 0):.0f}%", f"{c.get('steal', 0):.0f}%"]


def sections(ctx: Context, o: Outcome) -> None:
    cfg = o.cfg
    mb = 1024 * 1024
    head = ["Phase", "jobs/s", "window s", "workers CPU", "worker CPU ms/job", "Redis CPU",
            "stub CPU", "driver CPU", "other processes", "steal"]
    lines = [
        _cpu_line(f"no-op RQ jobs (backlog of {o.noop.jobs:,})", o.noop, o.noop.rate()),
        _cpu_line(f"sends (backlog of {o.sends.jobs:,})", o.sends, o.sends.rate()),
        _cpu_line(f"sends offered at {cfg.open_rate:g}/s for {cfg.open_s:g} s", o.open,
                  o.open.rate()),
    ]
    noise = max(d.cpu_percent.get("others", 0) + d.cpu_percent.get("steal", 0)
                for d in (o.noop, o.sends, o.open))
    warning = (f"**Noisy run:** other processes and the hypervisor's steal took up to "
               f"{noise:.0f}% of a core during the measured windows.\n\n"
               if noise > 25 else "")
    sup = o.supervisor_memory
    alone = o.standalone_memory
    lat = o.open_latency_ms
    rate = o.sends.rate()
    # Each process runs one job at a time: the time a send holds its process.
    cycle_s = cfg.processes / rate if rate > 0 else math.nan
    needed = math.ceil(TARGET_RATE * cycle_s) if rate > 0 else 0
    text = [
        warning + f"{_how(cfg)} against the Twilio stub answering in "
        f"{cfg.latency_s * 1000:.0f} ms, in its own process; embedded Redis (AOF everysec); "
        f"{o.layout}. Each reply is a real agent reply on its own WhatsApp ticket, enqueued "
        "with `JobQueues.send_outbound` as the web process does. CPU is % of one core over "
        "the measured window (the workers' figure covers the supervisor, the workers and "
        "RQ's scheduler process).",
        "",
        table(head, lines),
        "",
        f"A worker process runs one job at a time, so a send held its process "
        f"{fmt(cycle_s * 1000)} ms on average in the backlog phase: the stub's "
        f"{cfg.latency_s * 1000:.0f} ms, then the job's and RQ's own work and the wait for a "
        f"CPU; {needed} processes are the minimum for {TARGET_RATE:g} sends/s at that pace. "
        f"At {cfg.open_rate:g} sends/s offered, enqueue → answer recorded: p50 "
        f"{fmt(lat['p50'])} ms, p90 {fmt(lat['p90'])} ms, p99 {fmt(lat['p99'])} ms, max "
        f"{fmt(lat['max'])} ms (a queue building up would show as latency growing past the "
        "stub's answer time).",
        "",
        f"Memory (`/proc/<pid>/smaps_rollup` after the sustained phase): "
        f"{o.worker_processes} worker processes, each RSS {fmt(o.mean_rss / mb)} MiB, PSS "
        f"{fmt(o.mean_pss / mb)} MiB, USS {fmt(o.mean_uss / mb)} MiB (the workers are forked "
        "from a supervisor that imported and warmed everything, so most of their pages are "
        "shared)"
        + (f"; supervisor RSS {fmt(sup.rss / mb)} MiB, PSS {fmt(sup.pss / mb)} MiB"
           if sup else "")
        + f"; the whole tree (supervisor, workers, scheduler) {fmt(o.tree_pss / mb)} MiB PSS. "
        + (f"A separately started `python -m workers --no-fork`, measured after the warm-up "
           f"({o.standalone_jobs} jobs, alongside the others): RSS {fmt(alone.rss / mb)} MiB, "
           f"PSS {fmt(alone.pss / mb)} MiB, USS {fmt(alone.uss / mb)} MiB, what each of K "
           "such processes costs." if alone else ""),
        "",
        f"Warm shutdown: {o.shutdown.enqueued} more replies enqueued, SIGTERM sent with "
        f"{o.shutdown.in_flight} of them `sending`; the workers exited in "
        f"{o.shutdown.stop_s:.1f} s (exit status {o.shutdown.codes}) with "
        f"{o.shutdown.sent_before_exit} accepted and recorded and {o.shutdown.left_sending} "
        f"left `sending`; started again, they sent the rest in {o.shutdown.rest_s:.1f} s "
        "(over a minute would mean the SIGTERM stranded a job in RQ's intermediate list, "
        "sent by maintenance's retry; the workers finish a job they were taking before "
        "stopping, workers/dequeue.py).",
        "",
        f"Correctness, every phase: {o.accepted_once:,} of {o.events:,} replies accepted by "
        f"the stub exactly once with the provider id the worker recorded; {o.duplicates} "
        f"duplicates, {o.never_sent} never sent, {o.invalid} requests refused as invalid "
        f"(OpenAPI schema), {o.failed_jobs} failed jobs.",
    ]
    ctx.add_section("Outbound details", "\n".join(text))
