"""The benchmark harness at toy sizes: every module runs end to end and returns
well-formed rows; ingest's correctness check (stored == acknowledged) holds. No timing is
asserted (the machines are shared); `make bench` measures for real."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import redis
import redis.asyncio

from bench import (
    ingest,
    ingest_report,
    memory,
    outbound,
    relay,
    render_isolation,
    threads,
    timers,
)
from bench.__main__ import BENCHMARKS, load
from bench.data import bench_store, inbound, route, whatsapp_policy
from bench.report import Context, Row, Target, environment, render_markdown
from bench.svg import Series, line_chart
from bridge.store import keys


def check_rows(rows: list[Row], *benches: str) -> None:
    assert rows
    for row in rows:
        assert isinstance(row, Row)
        assert row.bench in benches and row.name and row.unit
        assert math.isfinite(row.value) and row.value >= 0, row
        if row.baseline is not None:
            assert math.isfinite(row.baseline) and row.baseline >= 0, row
        assert row.result in ("PASS", "FAIL", "—")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(workdir=tmp_path / "work", docs_dir=tmp_path / "docs", log=lambda m: None)


def test_ingest_smoke(tmp_path: Path, ctx: Context) -> None:
    """Both workloads run with the worker and the relay beside the web process; every 200
    answer is stored, every new conversation opened a ticket, and the relay handed every
    change log entry on."""
    outcome = ingest.measure(ingest.SMOKE, tmp_path / "ingest")
    assert outcome.acknowledged > 0
    assert outcome.bridge_errors == 0 and outcome.base_errors == 0
    assert outcome.stored == outcome.acknowledged == outcome.distinct_sids
    new_messages = sum(r.ok for r in [*outcome.new.rounds, *outcome.new.latency_rounds])
    assert new_messages > 0
    # Every new-conversation message opened a ticket; appends added at most `contacts`.
    assert new_messages <= outcome.tickets <= new_messages + ingest.SMOKE.contacts
    assert outcome.relay_pending == 0
    rows = ingest_report.rows(outcome)
    check_rows(rows, "ingest")
    by_name = {r.name.split(" (")[0]: r for r in rows}
    appends, new = rows[0], rows[1]
    assert appends.value > 0 and appends.baseline and appends.ratio
    assert new.value > 0 and new.baseline == appends.baseline
    assert by_name["new conversations/s vs appends/s"].baseline == appends.value
    for workload in ("appends to open tickets", "new conversations"):
        p50 = by_name[f"{workload}: p50 latency at half max"]
        p99 = by_name[f"{workload}: p99 latency at half max"]
        assert p50.value > 0 and p99.value >= p50.value
        cpu = by_name[f"{workload}: server CPU time per webhook"]
        assert cpu.value > 0 and cpu.baseline
    assert by_name["customer_message events stored vs 200 answers"].passed is True
    assert rows[-1].passed is True
    # The relay's lag was read at the end of every max-rate round of both workloads, and
    # the worst of them is a figure with its target.
    for workload in (outcome.appends, outcome.new):
        assert len(workload.relay_lag_rounds) == len(workload.rounds)
    behind = by_name["relay behind the change log at the end of a max-rate round"]
    assert behind.value == max(lag.oldest_s for w in (outcome.appends, outcome.new)
                               for lag in w.relay_lag_rounds)
    assert behind.target is not None and behind.target.threshold == 1.0
    # The web process's loop was probed during every latency round (every 50 ms).
    for workload in (outcome.appends, outcome.new):
        assert len(workload.loop_lag_rounds) == len(workload.latency_rounds)
        assert len(workload.redis_forks_rounds) == len(workload.latency_rounds)
        assert all(forks == 0 for forks in workload.redis_forks_rounds)
        for lag in workload.loop_lag_rounds:
            probes, *_ = ingest_report.loop_lag_summary(lag)
            assert probes > 0
    # Redis's own AOF rewrites were moved between phases (bench/aof.py): none in them.
    assert outcome.forks_in_phases == 0
    ingest_report.sections(ctx, outcome, ingest.SMOKE)
    [details] = ctx.sections
    # The table of what each open-loop round's tail was made of: a row per round.
    after_header = details.markdown.split("| Open-loop round (bridge) |", 1)[1]
    tail_rows = after_header.split("\n\n", 1)[0].splitlines()[2:]  # header's end, |---|
    rounds = len(outcome.appends.latency_rounds) + len(outcome.new.latency_rounds)
    assert len(tail_rows) == rounds
    assert all(row.startswith(("| appends to open tickets, ", "| new conversations, "))
               for row in tail_rows)
    # Each row ends with the round's Redis forks and other processes' CPU.
    assert all(row.rstrip(" |").rsplit(" | ", 2)[-2].isdigit() for row in tail_rows)
    assert "none during a load phase" in details.markdown


def test_relay_smoke(ctx: Context) -> None:
    """`python -m workers.relay` turns every written change into one trigger job, through a
    backlog and at a steady rate; latencies are measured for every change."""
    outcome = relay.measure(relay.SMOKE, ctx.workdir / "relay", log=lambda m: None)
    written = relay.SMOKE.backlog * relay.SMOKE.rounds + int(relay.SMOKE.rate
                                                             * relay.SMOKE.steady_s)
    assert outcome.changes == outcome.jobs == written
    assert outcome.latency_ms["n"] == int(relay.SMOKE.rate * relay.SMOKE.steady_s)
    rows = relay.rows(outcome)
    check_rows(rows, "relay")
    assert rows[0].value > 0 and rows[0].baseline and rows[0].baseline > 0
    assert rows[-1].passed is True
    p50, p99 = rows[2], rows[3]
    assert p99.value >= p50.value > 0


async def test_relay_bench_writes_the_entry_route_lua_writes(
        aredis: redis.asyncio.Redis) -> None:
    """The relay benchmark's changes are what routing a new contact's first message writes
    (same stream, same fields but for the ids), and the relay makes the same job of them."""
    result = await route(bench_store(aredis), inbound(7, 0, run="fmt"), whatsapp_policy())
    assert result.ticket_id is not None
    stream = keys.change_log_of(result.contact_id)
    [(_, raw)] = await aredis.xrange(stream)
    real = {k.decode(): v.decode() for k, v in raw.items()}
    bench = relay.new_ticket_change(7, int(result.ticket_id))
    assert bench.stream == stream
    assert bench.fields.keys() == real.keys()
    times = ("e", "ca")  # the event's id and the ticket's creation time
    assert {k: v for k, v in bench.fields.items() if k not in times} == {
        k: v for k, v in real.items() if k not in times}
    assert int(bench.fields["ca"]) > 0 and int(real["ca"]) > 0
    assert bench.job.func == "workers.tasks.on_ticket_event"
    assert bench.job.payload["trigger"] == "ticket.created"


def test_threads_smoke(ctx: Context) -> None:
    rows = threads.run(ctx, threads.SMOKE)
    check_rows(rows, "threads", "lists")
    assert {r.bench for r in rows} == {"threads", "lists"}
    for r in rows:
        assert r.value > 0 and r.baseline and r.baseline > 0, r
    assert any("500-message" in r.name for r in rows)
    assert ctx.sections


def test_memory_smoke(ctx: Context) -> None:
    rows = memory.run(ctx, memory.SMOKE)
    check_rows(rows, "memory")
    assert rows[0].value > 0 and rows[0].baseline


def test_outbound_smoke(ctx: Context) -> None:
    """`python -m workers --processes 2` drains no-op jobs and sends through the stub (in
    its own process), keeps up with an open loop, stops warm with sends in flight, and every
    reply reaches the stub exactly once."""
    rows = outbound.run(ctx, outbound.SMOKE)
    check_rows(rows, "outbound")
    by_name = {r.name.split(",")[0].split(" (")[0]: r for r in rows}
    rate = rows[0]
    assert rate.value > 0 and rate.baseline and rate.baseline > 0
    assert by_name["worker CPU time per send"].value > 0
    memory_row = next(r for r in rows if r.name.startswith("memory per worker process"))
    assert memory_row.value > 0 and memory_row.baseline and memory_row.baseline > 0
    exactly_once = by_name["replies accepted by the stub exactly once"]
    assert exactly_once.passed is True, exactly_once
    shutdown = rows[-1]
    assert shutdown.passed is True and "exit [0]" in shutdown.note, shutdown
    assert ctx.sections


def test_timers_smoke(ctx: Context) -> None:
    """Close timers set by workers.automations.schedule_timer fire through a real worker's
    scheduler with and without pending timers, each ticket closed once, none early."""
    outcome = timers.measure(timers.SMOKE, ctx.workdir / "timers", log=lambda m: None)
    for r in (outcome.baseline, outcome.loaded):
        assert r.unfired == 0 and len(r.fired) == timers.SMOKE.timers
        assert all(f.closings == 1 for f in r.fired)
        assert r.early == 0  # RQ truncates to the second: schedule_timer rounds up
    assert outcome.loaded.pending == outcome.pending_after == timers.SMOKE.pending
    assert outcome.failed_jobs == 0
    rows = timers.rows(outcome)
    check_rows(rows, "timers")
    closed_once = next(r for r in rows if r.name.startswith("tickets closed exactly once"))
    assert closed_once.passed is True, closed_once


async def test_bulk_tickets_match_the_store_write_path(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    """threads.bulk_tickets writes what route_inbound + update_ticket + the index upkeep
    write (except the status-change events and the change log: a bulk-loaded fixture has no
    history for the relay to hand on): same keys, types, index members, fields."""

    def snapshot() -> dict[str, object]:
        out: dict[str, object] = {}
        for raw in sync_redis.scan_iter(count=1000):
            key = raw.decode()
            if key.endswith(":log"):
                continue
            kind = sync_redis.type(key).decode()
            if kind == "zset":
                out[key] = sorted(m.decode() for m in sync_redis.zrange(key, 0, -1))
            elif kind == "hash":
                fields = {k.decode(): v.decode() for k, v in sync_redis.hgetall(key).items()}
                ignore = ("_at_ms", "window_until_ms", "version", "op")
                out[key] = {k: ("*" if k.endswith(ignore) else v) for k, v in fields.items()}
            else:
                out[key] = kind
        return out

    count = 30
    await threads.make_tickets(bench_store(aredis), count, first_contact=500, run="c1",
                               concurrency=1)
    via_store = snapshot()
    sync_redis.flushdb()
    await threads.bulk_tickets(aredis, count, first_contact=500, run="c1")
    via_bulk = snapshot()
    assert via_bulk.keys() == via_store.keys()
    for key, value in via_store.items():
        if re.search(r":seen$", key):
            continue  # provider ids scored by arrival time: same members, checked below
        assert via_bulk[key] == value, key


def test_render_isolation_smoke(tmp_path: Path) -> None:
    """The loaded phases really render drafts: the agents are answered with a render that
    used its whole budget or a refusal to retry, nothing else (until 2026-12-05 they got
    403 and the figure measured a flood of refusals)."""
    cfg = render_isolation.RenderIsolationConfig(agents=3, render_workers=2, rounds=1,
                                                 phase_s=1.0, load_warmup_s=0.3)
    outcome = render_isolation.measure(cfg, tmp_path / "render", pin=False)
    assert outcome.previews[render_isolation.RENDERED] > 0
    assert render_isolation.unexpected_answers(outcome.previews) == {}
    assert outcome.idle_s and outcome.loaded_s and not outcome.webhook_errors
    check_rows(render_isolation.rows(outcome, cfg), "render_isolation")


def test_unexpected_preview_answers_are_named() -> None:
    from collections import Counter

    answers = Counter({render_isolation.RENDERED: 2, "503 busy": 5, "403 forbidden": 7})
    assert render_isolation.unexpected_answers(answers) == {"403 forbidden": 7}


def test_every_listed_module_has_run_or_is_planned() -> None:
    for name in BENCHMARKS:
        fn = load(name)
        assert fn is None or callable(fn)
    assert load("ingest") is ingest.run
    assert load("outbound") is outbound.run and load("timers") is timers.run
    assert load("relay") is relay.run


def test_report_and_svg(tmp_path: Path) -> None:
    rows = [
        Row(bench="x", name="ratio fig", value=3, unit="req/s", baseline=10,
            baseline_name="ref", target=Target(op=">=", threshold=0.3, on="ratio")),
        Row(bench="x", name="value fig", value=25, unit="ms",
            target=Target(op="<", threshold=20)),
        Row(bench="x", name="info", value=1.5, unit="B"),
    ]
    assert [r.passed for r in rows] == [True, False, None]
    text = render_markdown(rows, [], environment(), command="make bench", elapsed_s=1,
                           errors=[], missing=["outbound"])
    assert "| x | ratio fig | 3 req/s |" in text and "0.30×" in text
    assert "bench/outbound.py" in text and "**1 fail**" in text
    svg = line_chart([Series("p50", "#000", [(10, 1.0), (20, 2.5)]),
                      Series("p99", "#f00", [(10, 3.0), (20, 40.0)])],
                     title="t", x_label="x", y_label="y", hline=(20.0, "target"))
    ET.fromstring(svg)  # well-formed XML
