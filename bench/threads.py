"""Thread reads and ticket lists (DESIGN §8): the newest 50 events of a 100,000-message
ticket cost no more than 1.5x those of a 50-message ticket; ticket lists page in O(page).

Everything goes through bridge.store.tickets.TicketStore against an embedded Redis on
loopback. The 50-message ticket is routed message by message (`route_inbound`, as the
webhook does); the longer ones are opened the same way and then bulk-loaded with XADD of
the very entries route.lua writes, to keep the set-up fast. Ticket lists are bulk-written
the same way (bulk_tickets: the keys route.lua, update_ticket and the index upkeep leave;
tests/test_bench_smoke.py checks them against the store's own write path). Timings are
interleaved (each iteration reads every variant once, in rotating order) so that a noisy
neighbour slows all variants alike and the ratios stay fair.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio

from bench.data import CONTACT_KEY, bench_store, event_fields, inbound, route, whatsapp_policy
from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bridge.core.messages import contact_id_for
from bridge.core.tickets import Status
from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis
from bridge.store.tickets import TicketStore

# Status mix of the ticket lists (a help desk's backlog): 20% pending.
STATUS_MIX: tuple[Status, ...] = (
    Status.NEW, Status.NEW, Status.OPEN, Status.OPEN, Status.OPEN, Status.PENDING,
    Status.PENDING, Status.HOLD, Status.SOLVED, Status.CLOSED,
)


@dataclass(frozen=True, kw_only=True)
class ThreadsConfig:
    small_thread: int = 50
    thread_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    thread_iterations: int = 1000
    small_list: int = 1_000
    big_list: int = 20_000
    list_iterations: int = 150
    page: int = 50
    warmup_iterations: int = 50
    concurrency: int = 32  # set-up only


SMOKE = ThreadsConfig(thread_sizes=(500,), thread_iterations=20, small_list=260,
                      big_list=400, list_iterations=10, warmup_iterations=2)
QUICK = ThreadsConfig(thread_sizes=(1_000, 100_000), thread_iterations=300, big_list=5_000,
                      list_iterations=60, warmup_iterations=20)


async def _gather_bounded(n: int, limit: int, make: Callable[[int], Awaitable[object]]
                          ) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> None:
        async with sem:
            await make(i)

    await asyncio.gather(*(one(i) for i in range(n)))


# ----------------------------------------------------------------------- set-up


async def make_thread(store: TicketStore, contact: int, size: int, *, bulk: bool,
                      run: str) -> str:
    """A ticket with `size` customer messages; returns its id."""
    policy = whatsapp_policy()
    first = await route(store, inbound(contact, 0, run=run), policy)
    assert first.ticket_id is not None
    tid, cid = first.ticket_id, first.contact_id
    if not bulk:
        for seq in range(1, size):
            res = await route(store, inbound(contact, seq, run=run), policy)
            assert res.ticket_id == tid, "the thread split (max_thread_messages?)"
        return tid
    ekey = keys.events(cid, tid)
    for start in range(1, size, 5000):
        async with store.redis.pipeline(transaction=False) as pipe:
            for seq in range(start, min(size, start + 5000)):
                pipe.xadd(ekey, event_fields(inbound(contact, seq, run=run)))
            await pipe.execute()
    await store.redis.hset(keys.ticket(cid, tid), "message_count", str(size))
    return tid


async def make_tickets(store: TicketStore, count: int, *, first_contact: int, run: str,
                       concurrency: int) -> None:
    """`count` tickets, one per contact, with the statuses of STATUS_MIX, through the
    store's own write path (route_inbound, then update_ticket). Slow (~10 round trips a
    ticket): the benchmark uses bulk_tickets, and the smoke test checks that both build
    the same keys."""
    policy = whatsapp_policy()
    now = int(time.time() * 1000)

    async def one(i: int) -> None:
        res = await route(store, inbound(first_contact + i, i, run=run), policy)
        assert res.ticket_id is not None
        status = STATUS_MIX[i % len(STATUS_MIX)]
        if status is not Status.NEW:
            await store.update_ticket(res.ticket_id, author="bench", now_ms=now,
                                      status=status)

    await _gather_bounded(count, concurrency, one)


async def bulk_tickets(client: redis.asyncio.Redis, count: int, *, first_contact: int,
                       run: str) -> None:
    """The same tickets as make_tickets, written with pipelines: the hashes, stream entry
    and index entries that route.lua, update_ticket and _reindex leave behind (the status
    change event excepted)."""
    now = int(time.time() * 1000)
    first_id = int(await client.incrby(keys.TICKET_SEQ, count)) - count + 1
    for chunk in range(0, count, 1000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(chunk, min(count, chunk + 1000)):
                tid = str(first_id + i)
                msg = inbound(first_contact + i, i, run=run)
                cid = contact_id_for(CONTACT_KEY.encode(), msg.channel, msg.contact_address)
                status = STATUS_MIX[i % len(STATUS_MIX)]
                ticket = {
                    "id": tid, "contact_id": cid, "channel": msg.channel.value,
                    "status": status.value, "session": "active", "created_at_ms": now,
                    "updated_at_ms": now, "message_count": 1, "follow_up_of": "",
                    "version": 1 if status is Status.NEW else 2,
                }
                if status is not Status.NEW:  # changed by update_ticket, which marks it
                    ticket["op"] = "bulk"
                if status is Status.SOLVED:
                    ticket["solved_at_ms"] = now
                if status is Status.CLOSED:
                    ticket["closed_at_ms"] = now
                pipe.hset(keys.ticket(cid, tid), mapping=ticket)
                pipe.hset(keys.contact(cid), mapping={
                    "id": cid, "channel": msg.channel.value, "address": msg.contact_address,
                    "window_until_ms": now + 24 * 3600 * 1000, "name": msg.profile_name,
                    "wa_id": msg.wa_id, "cur": tid,
                })
                pipe.zadd(keys.seen(cid), {msg.provider_id: now})
                pipe.xadd(keys.events(cid, tid), event_fields(msg))
                pipe.hset(keys.TICKET_CONTACT, tid, cid)
                score = {tid: int(tid)}
                for index in (keys.index("all"), keys.index("contact", cid),
                              keys.index("channel", msg.channel.value),
                              keys.index("status", status.value)):
                    pipe.zadd(index, score)
            await pipe.execute()


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def interleaved(variants: dict[str, Callable[[], Awaitable[object]]], iterations: int,
                      warmup: int) -> dict[str, list[float]]:
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + iterations):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            dt = await _timed(variants[name])
            if i >= warmup:
                times[name].append(dt)
    return times


# ----------------------------------------------------------------------- measure


@dataclass(frozen=True)
class Outcome:
    thread_ms: dict[int, dict[str, float]]  # thread size -> summary (ms)
    list_ms: dict[str, dict[str, float]]  # variant -> summary (ms)
    list_sizes: tuple[int, int]
    deep_ranks: tuple[int, int]
    page_sizes: dict[str, int]  # variant -> tickets returned (sanity)


async def measure_async(cfg: ThreadsConfig, url: str) -> Outcome:
    clients = [redis.asyncio.Redis.from_url(url.rsplit("/", 1)[0] + f"/{db}")
               for db in (0, 1, 2)]
    try:
        for c in clients:
            await c.flushdb()
        threads_store, small_store, big_store = (bench_store(c) for c in clients)
        # Threads (db 0).
        tickets = {cfg.small_thread: await make_thread(
            threads_store, 0, cfg.small_thread, bulk=False, run="a0")}
        for n, size in enumerate(cfg.thread_sizes, 1):
            tickets[size] = await make_thread(threads_store, n, size, bulk=True, run=f"a{n}")
        for size, tid in tickets.items():
            events, _ = await threads_store.events(tid, limit=cfg.page)
            assert len(events) == min(cfg.page, size), (size, len(events))

        def read(tid: str) -> Callable[[], Awaitable[object]]:
            return lambda: threads_store.events(tid, limit=cfg.page)

        t = await interleaved({str(s): read(tid) for s, tid in tickets.items()},
                              cfg.thread_iterations, cfg.warmup_iterations)
        thread_ms = {int(s): summary_ms(v) for s, v in t.items()}

        # Ticket lists: db 1 small, db 2 big; contacts disjoint from the threads'.
        await bulk_tickets(clients[1], cfg.small_list, first_contact=100_000, run="b1")
        await bulk_tickets(clients[2], cfg.big_list, first_contact=200_000, run="b2")
        ranks = (cfg.small_list * 3 // 4, cfg.big_list * 3 // 4)
        cursors = []
        for store, rank in ((small_store, ranks[0]), (big_store, ranks[1])):
            ids = await store.redis.zrevrange(keys.index("all"), rank, rank)
            cursors.append(int(ids[0]))

        def page(store: TicketStore, **kw: object) -> Callable[[], Awaitable[object]]:
            return lambda: store.list_tickets(limit=cfg.page, **kw)  # type: ignore[arg-type]

        variants = {
            "first/small": page(small_store), "first/big": page(big_store),
            "deep/small": page(small_store, cursor=cursors[0]),
            "deep/big": page(big_store, cursor=cursors[1]),
            "pending/small": page(small_store, status=Status.PENDING),
            "pending/big": page(big_store, status=Status.PENDING),
        }
        sizes = {}
        for name, fn in variants.items():
            result = await fn()
            assert isinstance(result, tuple)
            sizes[name] = len(result[0])
            if name.startswith("pending"):
                assert all(t.status is Status.PENDING for t in result[0]), name
        lists = await interleaved(variants, cfg.list_iterations, cfg.warmup_iterations)
        return Outcome(
            thread_ms=thread_ms,
            list_ms={k: summary_ms(v) for k, v in lists.items()},
            list_sizes=(cfg.small_list, cfg.big_list),
            deep_ranks=ranks,
            page_sizes=sizes,
        )
    finally:
        for c in clients:
            await c.aclose()


def measure(cfg: ThreadsConfig, workdir: Path) -> Outcome:
    with EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        return asyncio.run(measure_async(cfg, rds.url))


def rows(o: Outcome, cfg: ThreadsConfig) -> list[Row]:
    small = o.thread_ms[cfg.small_thread]
    out = []
    for size in cfg.thread_sizes:
        s = o.thread_ms[size]
        out.append(Row(
            bench="threads", name=f"newest {cfg.page} events, {size:,}-message ticket (mean)",
            value=s["mean"], unit="ms", baseline=small["mean"],
            baseline_name=f"{cfg.small_thread}-message ticket",
            target=Target(op="<=", threshold=1.5, on="ratio")))
    biggest = max(cfg.thread_sizes)
    out.append(Row(
        bench="threads", name=f"newest {cfg.page} events, {biggest:,}-message ticket (p99)",
        value=o.thread_ms[biggest]["p99"], unit="ms", baseline=small["p99"],
        baseline_name=f"{cfg.small_thread}-message ticket"))
    n_small, n_big = o.list_sizes
    lm = o.list_ms
    for variant, label in (("first", "first page"),
                           ("deep", f"page after rank {o.deep_ranks[1]:,} (cursor)"),
                           ("pending", "first page, status=pending")):
        out.append(Row(
            bench="lists", name=f"ticket list {label}, {n_big:,} tickets (mean)",
            value=lm[f"{variant}/big"]["mean"], unit="ms",
            baseline=lm[f"{variant}/small"]["mean"],
            baseline_name=f"same page, {n_small:,} tickets",
            target=Target(op="<=", threshold=1.5, on="ratio")))
    out.append(Row(
        bench="lists", name=f"deep page vs first page, {n_big:,} tickets (mean)",
        value=lm["deep/big"]["mean"], unit="ms", baseline=lm["first/big"]["mean"],
        baseline_name="first page", target=Target(op="<=", threshold=1.5, on="ratio")))
    return out


def sections(ctx: Context, o: Outcome, cfg: ThreadsConfig) -> None:
    head = ["Read", "mean ms", "p50 ms", "p99 ms", "max ms", "samples"]

    def line(label: str, s: dict[str, float]) -> list[str]:
        return [label, fmt(s["mean"]), fmt(s["p50"]), fmt(s["p99"]), fmt(s["max"]),
                str(int(s["n"]))]

    thread_lines = [line(f"`events(limit={cfg.page})`, {size:,} messages", s)
                    for size, s in sorted(o.thread_ms.items())]
    list_lines = [line(f"`list_tickets` {name} ({o.page_sizes[name]} tickets)", s)
                  for name, s in o.list_ms.items()]
    ctx.add_section("Thread and list details", "\n".join([
        "In-process `TicketStore` calls against the embedded Redis on loopback (one client "
        "connection, sequential calls, interleaved variants). Ticket lists: "
        f"{o.list_sizes[0]:,} (small) and {o.list_sizes[1]:,} (big) tickets, one per "
        "contact, statuses new 20%, open 30%, pending 20%, hold 10%, solved 10%, closed "
        f"10%; the deep page starts after rank {o.deep_ranks[0]:,} (small) / "
        f"{o.deep_ranks[1]:,} (big), newest first.",
        "",
        table(head, thread_lines + list_lines),
    ]))


def run(ctx: Context, cfg: ThreadsConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else ThreadsConfig())
    ctx.log(f"  threads: building threads of {cfg.small_thread} and "
            f"{', '.join(f'{s:,}' for s in cfg.thread_sizes)} messages, "
            f"ticket lists of {cfg.small_list:,} and {cfg.big_list:,}")
    outcome = measure(cfg, ctx.workdir / "threads")
    sections(ctx, outcome, cfg)
    return rows(outcome, cfg)
