"""The report counters' consumer fed by the real change log: routed messages, agent replies
and solves, a survey and its answer, handed on twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
import redis.asyncio

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy
from bridge.core.report_counts import bucket_of, bucket_value
from bridge.core.routing import RatingSignal
from bridge.core.tickets import EventType, Status, Ticket
from bridge.report_query import build_report, parse_period
from bridge.store import keys
from bridge.store.changelog import ChangeLog
from bridge.store.tickets import TicketStore
from tests.factories import ids, inbound, inbound_message, now_ms
from tests.relay_support import relay_all
from workers.report_counters import ReportConsumer

MIN = 60_000


def approx(seconds: float) -> float:
    return round(bucket_value(bucket_of(seconds)), 1)


async def _report(aredis: redis.asyncio.Redis) -> dict[str, object]:
    today = datetime.now(UTC).date()
    return await build_report(aredis, parse_period(
        since=(today - timedelta(days=1)).isoformat(),
        until=(today + timedelta(days=1)).isoformat()))


async def test_the_consumer_counts_a_tickets_life_once(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    start = now_ms() - 120 * MIN
    tid = ids(await inbound(store, "Bonjour", at_ms=start))
    await store.update_ticket(tid, author="alice", now_ms=start + 10 * MIN,
                              event=(EventType.AGENT_REPLY, "Bonjour !", {"kind": "reply"}))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.SOLVED,
                              assignee="alice")
    await store.update_ticket(tid, author="system", now_ms=now_ms(),
                              event=(EventType.CSAT_SENT, "Rate us 1-5", {"kind": "csat"}))
    await store.open_survey(tid, now_ms())
    await inbound(store, "5")
    consumer = ReportConsumer.on(aredis)
    assert await relay_all(aredis, sync_redis, [consumer]) > 0

    report = await _report(aredis)
    assert report["tickets"]["created"] == 1 and report["tickets"]["solved"] == 1
    assert report["times"]["first_reply"]["median_s"] == approx(600)
    assert report["times"]["full_resolution"]["median_s"] == approx(7200)
    assert report["csat"]["surveys_sent"] == 1 and report["csat"]["positive"] == 1
    assert report["agents"][0]["name"] == "alice" and report["agents"][0]["replies"] == 1

    # The same changes handed on again (a relay that died before saving its position).
    await consumer.handle(await ChangeLog(aredis).all_entries())
    assert await _report(aredis) | {"generated_at": ""} == report | {"generated_at": ""}


async def test_a_pending_ticket_the_customer_answers_stops_the_agent_wait(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.PENDING)
    await inbound(store, "Voici le numéro")
    consumer = ReportConsumer.on(aredis)
    await relay_all(aredis, sync_redis, [consumer])
    (figures, _), = (await consumer.counters.figures([tid])).values()
    assert figures.status == "open"


async def test_a_customer_answer_in_a_later_batch_reopens_a_pending_ticket(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.PENDING)
    consumer = ReportConsumer.on(aredis)
    await relay_all(aredis, sync_redis, [consumer])
    await inbound(store, "Voici le numéro")
    await relay_all(aredis, sync_redis, [consumer])
    (figures, _), = (await consumer.counters.figures([tid])).values()
    assert figures.status == "open"


def _count_reads(consumer: ReportConsumer, monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[list[list[object]], list[list[str]]]:
    """The tickets and the figures the consumer reads from now on."""
    asked: list[list[object]] = []
    get_tickets, tickets_in = consumer.store.get_tickets, consumer.store.tickets_in

    async def counting(ticket_ids: list[str]) -> list[Ticket]:
        asked.append(list(ticket_ids))
        return await get_tickets(ticket_ids)

    async def counting_in(pairs: list[tuple[str, str]]) -> list[Ticket]:
        asked.append(list(pairs))
        return await tickets_in(pairs)

    monkeypatch.setattr(consumer.store, "get_tickets", counting)
    monkeypatch.setattr(consumer.store, "tickets_in", counting_in)
    figures_asked: list[list[str]] = []
    figures = consumer.counters.figures

    async def counting_figures(ticket_ids: list[str]) -> object:
        figures_asked.append(list(ticket_ids))
        return await figures(ticket_ids)

    monkeypatch.setattr(consumer.counters, "figures", counting_figures)
    return asked, figures_asked


async def test_messages_appended_to_an_open_ticket_read_no_ticket(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await inbound(store, "Bonjour")
    consumer = ReportConsumer.on(aredis)
    await relay_all(aredis, sync_redis, [consumer])
    asked, figures_asked = _count_reads(consumer, monkeypatch)
    for body in ("un", "deux", "trois"):
        await inbound(store, body)
    assert await relay_all(aredis, sync_redis, [consumer]) == 3
    # Neither the tickets nor their figures: the entries say the status stayed as it was.
    assert [ids for ids in asked if ids] == []
    assert figures_asked == []


async def test_openings_are_counted_from_their_entries(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A routed opening's entry carries the new ticket's channel and creation time: the
    consumer counts it by channel without reading the ticket."""
    opened = [ids(await inbound(store, "Bonjour", address=f"whatsapp:+3361234{n:04d}"))
              for n in range(3)]
    widget = await store.route_inbound(
        inbound_message("Hello", address="visitor-7", channel=Channel.WIDGET),
        RatingSignal(), ChannelPolicy(), now_ms=now_ms())
    entries = {c.ticket_id: c for c in await ChangeLog(aredis).all_entries()}
    assert sorted(entries) == sorted([*opened, ids(widget)])
    for tid, change in entries.items():
        ticket = await store.get_ticket(tid)
        assert (change.channel, change.created_at_ms) == (ticket.channel,
                                                          ticket.created_at_ms)
    consumer = ReportConsumer.on(aredis)
    asked, _ = _count_reads(consumer, monkeypatch)
    assert await relay_all(aredis, sync_redis, [consumer]) == 4
    assert [ids for ids in asked if ids] == []
    report = await _report(aredis)
    assert report["tickets"]["created"] == 4
    assert {name: figures["created"] for name, figures in report["tickets"]["by_channel"].items()
            } == {"whatsapp": 3, "widget": 1}


async def test_an_opening_from_before_entries_named_the_channel_reads_its_ticket(
        aredis: redis.asyncio.Redis, store: TicketStore) -> None:
    """Entries written before routing recorded the channel (a log carried over an upgrade)."""
    await inbound(store, "Bonjour")
    [opening] = await ChangeLog(aredis).all_entries()
    await ReportConsumer.on(aredis).handle([opening._replace(channel="", created_at_ms=0)])
    report = await _report(aredis)
    assert report["tickets"]["created"] == 1
    assert report["tickets"]["by_channel"]["whatsapp"]["created"] == 1


async def test_a_new_ticket_not_indexed_yet_is_counted(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    """The relay may read a new ticket's change before the web process wrote the ticket ->
    contact index (a round trip after the change): the change names the contact."""
    tid = ids(await inbound(store, "Bonjour"))
    await aredis.hdel(keys.TICKET_CONTACT, tid)
    await relay_all(aredis, sync_redis, [ReportConsumer.on(aredis)])
    assert (await _report(aredis))["tickets"]["created"] == 1


async def test_an_entry_without_statuses_is_judged_from_the_figures(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    """Entries written before routing recorded statuses (a log carried over an upgrade):
    an append to a pending ticket still counts the ticket open again."""
    tid = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.PENDING)
    consumer = ReportConsumer.on(aredis)
    await relay_all(aredis, sync_redis, [consumer])
    await inbound(store, "Voici le numéro")
    [*_, answer] = await ChangeLog(aredis).all_entries()
    assert (answer.action, answer.status_from, answer.status_to) == ("append", "pending",
                                                                      "open")
    await consumer.handle([answer._replace(status_from="", status_to="")])
    (figures, _), = (await consumer.counters.figures([tid])).values()
    assert figures.status == "open"


async def test_a_thread_limit_follow_up_closes_the_previous_ticket_once(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    from bridge.core.policy import ChannelPolicy

    limit = ChannelPolicy(max_thread_messages=2)
    first = ids(await inbound(store, "un", policy=limit))
    await inbound(store, "deux", policy=limit)
    second = ids(await inbound(store, "trois", policy=limit))
    assert second != first
    await relay_all(aredis, sync_redis, [ReportConsumer.on(aredis)])
    report = await _report(aredis)
    assert report["tickets"]["created"] == 2 and report["tickets"]["closed"] == 1


async def test_a_follow_up_of_a_solved_ticket_does_not_close_it(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    from bridge.core.policy import ChannelPolicy, SolvedReply

    policy = ChannelPolicy(solved_reply=SolvedReply.FOLLOW_UP)
    first = ids(await inbound(store, "Bonjour", policy=policy))
    await store.update_ticket(first, author="alice", now_ms=now_ms(), status=Status.SOLVED)
    assert ids(await inbound(store, "Encore moi", policy=policy)) != first
    await relay_all(aredis, sync_redis, [ReportConsumer.on(aredis)])
    report = await _report(aredis)
    assert report["tickets"]["created"] == 2 and report["tickets"]["closed"] == 0
    assert report["tickets"]["solved"] == 1


async def test_a_solve_is_credited_to_who_held_the_ticket_then(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis, store: TicketStore) -> None:
    """The ticket changes hands after the solve, before the relay reads the change: the
    solve stays bob's (it went to whoever held the ticket when the relay ran)."""
    tid = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(tid, author="bob", now_ms=now_ms(), assignee="bob")
    await store.update_ticket(tid, author="bob", now_ms=now_ms(), status=Status.SOLVED)
    await store.update_ticket(tid, author="admin", now_ms=now_ms(), assignee="alice")
    assert await relay_all(aredis, sync_redis, [ReportConsumer.on(aredis)]) > 0
    agents = {a["name"]: a for a in (await _report(aredis))["agents"]}
    assert agents["bob"]["solved"] == 1
    assert agents.get("alice", {"solved": 0})["solved"] == 0
