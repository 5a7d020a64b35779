"""Concurrent routing against real Redis: one atomic step per message (DESIGN §2)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import Action, RatingSignal
from bridge.core.tickets import EventType, Status
from bridge.store import keys
from bridge.store.connection import async_redis
from bridge.store.tickets import RouteResult, TicketStore
from tests.conftest import CONTACT_KEY, contact_id, make_settings
from tests.factories import inbound_message

NOW = 1_700_000_000_000
POLICY = ChannelPolicy()


@pytest.fixture
async def store(redis_url: str, sync_redis: redis.Redis) -> AsyncIterator[TicketStore]:
    """The production client: a blocking pool of 16 connections, so hundreds of
    concurrent calls queue for a connection as they would in the web process."""
    settings = make_settings(redis_url, redis_max_connections=16, redis_pool_timeout_s=30.0)
    client = async_redis(settings)
    yield TicketStore(client, contact_key=CONTACT_KEY.encode())
    await client.aclose()


def msg(pid: str, address: str = "whatsapp:+33612345678", body: str = "") -> InboundMessage:
    return inbound_message(body or f"body {pid}", sid=pid, address=address, at_ms=NOW)


async def route_all(store: TicketStore, messages: list[InboundMessage],
                    policy: ChannelPolicy = POLICY) -> list[RouteResult]:
    return list(await asyncio.gather(*(
        store.route_inbound(m, RatingSignal(), policy, now_ms=NOW) for m in messages
    )))


async def all_events(store: TicketStore, ticket_id: str) -> list[str]:
    events, cursor = await store.events(ticket_id, limit=200)
    bodies = [e.body for e in events if e.type is EventType.CUSTOMER_MESSAGE]
    while cursor:
        events, cursor = await store.events(ticket_id, cursor=cursor, limit=200)
        bodies += [e.body for e in events if e.type is EventType.CUSTOMER_MESSAGE]
    return bodies


async def test_200_concurrent_messages_from_a_new_contact_make_one_ticket(
    store: TicketStore,
) -> None:
    messages = [msg(f"SM{i:04d}") for i in range(200)]
    results = await route_all(store, messages)

    ticket_ids = {r.ticket_id for r in results}
    assert len(ticket_ids) == 1 and None not in ticket_ids
    counts = Counter(r.action for r in results)
    assert counts == {Action.NEW_TICKET: 1, Action.APPEND: 199}
    assert len({r.event_id for r in results}) == 200

    tid = results[0].ticket_id or ""
    ticket = await store.get_ticket(tid)
    assert ticket.message_count == 200
    assert ticket.status is Status.NEW
    bodies = await all_events(store, tid)
    assert len(bodies) == 200
    assert Counter(bodies) == Counter(m.body for m in messages)
    cid = contact_id(Channel.WHATSAPP, messages[0].contact_address)
    page, cursor = await store.list_tickets(contact_id=cid)
    assert [t.id for t in page] == [tid] and cursor is None
    all_tickets, _ = await store.list_tickets(limit=200)
    assert [t.id for t in all_tickets] == [tid]


async def test_events_keep_arrival_order_of_the_routing_steps(store: TicketStore) -> None:
    """The thread order is the order in which the atomic steps ran (their event ids)."""
    results = await route_all(store, [msg(f"SM{i}") for i in range(50)])
    tid = results[0].ticket_id or ""
    by_event = sorted(results, key=lambda r: tuple(map(int, (r.event_id or "0-0").split("-"))))
    events, _ = await store.events(tid, limit=100)
    assert [e.id for e in reversed(events)] == [r.event_id for r in by_event]
    # The one that opened the ticket is first in the thread.
    assert by_event[0].action is Action.NEW_TICKET


async def test_same_message_three_times_concurrently_is_stored_once(
    store: TicketStore, aredis: redis.asyncio.Redis
) -> None:
    results = await route_all(store, [msg("SMdup")] * 3)
    counts = Counter(r.action for r in results)
    assert counts == {Action.NEW_TICKET: 1, Action.DUPLICATE: 2}
    tid = next(r.ticket_id for r in results if r.action is Action.NEW_TICKET) or ""
    assert (await store.get_ticket(tid)).message_count == 1
    assert await all_events(store, tid) == ["body SMdup"]
    # Ticket ids allocated for the losers are left unused: only one ticket exists.
    tickets, _ = await store.list_tickets()
    assert [t.id for t in tickets] == [tid]
    cid = contact_id(Channel.WHATSAPP, msg("SMdup").contact_address)
    assert await aredis.zcard(keys.seen(cid)) == 1


async def test_retries_of_an_existing_ticket_message_concurrently(store: TicketStore) -> None:
    first = await store.route_inbound(msg("SM0"), RatingSignal(), POLICY, now_ms=NOW)
    batch = [msg(f"SM{i % 5 + 1}") for i in range(25)]  # 5 distinct messages, 5 times each
    results = await route_all(store, batch)
    counts = Counter(r.action for r in results)
    assert counts == {Action.APPEND: 5, Action.DUPLICATE: 20}
    ticket = await store.get_ticket(first.ticket_id or "")
    assert ticket.message_count == 6
    assert sorted(await all_events(store, ticket.id)) == [f"body SM{i}" for i in range(6)]


async def test_many_contacts_at_once(store: TicketStore) -> None:
    contacts = [f"whatsapp:+3361000{i:04d}" for i in range(20)]
    messages = [msg(f"SM{c[-4:]}-{j}", address=c) for j in range(10) for c in contacts]
    results = await route_all(store, messages)

    by_contact: dict[str, set[str | None]] = {}
    for m, r in zip(messages, results, strict=True):
        by_contact.setdefault(m.contact_address, set()).add(r.ticket_id)
    assert all(len(ids) == 1 for ids in by_contact.values())
    ticket_ids = {next(iter(ids)) for ids in by_contact.values()}
    assert len(ticket_ids) == 20
    assert Counter(r.action for r in results) == {Action.NEW_TICKET: 20, Action.APPEND: 180}

    tickets, cursor = await store.list_tickets(limit=50)
    assert {t.id for t in tickets} == ticket_ids and cursor is None
    for t in tickets:
        assert t.message_count == 10
        address = next(a for a, ids in by_contact.items() if t.id in ids)
        expected = {m.body for m in messages if m.contact_address == address}
        bodies = await all_events(store, t.id)
        assert len(bodies) == 10 and set(bodies) == expected


async def test_concurrent_burst_over_the_thread_limit(store: TicketStore) -> None:
    """30 concurrent messages with a 10-message limit: three full tickets, each closed by the
    next one except the last, every message stored once."""
    policy = ChannelPolicy(max_thread_messages=10)
    messages = [msg(f"SM{i}") for i in range(30)]
    results = await route_all(store, messages, policy)
    counts = Counter(r.action for r in results)
    assert counts == {Action.NEW_TICKET: 1, Action.FOLLOW_UP: 2, Action.APPEND: 27}
    by_id = {t: await store.get_ticket(t) for t in {r.ticket_id or "" for r in results}}
    assert len(by_id) == 3
    # Creation order follows the follow-up chain; ids need not be in that order, because
    # an id is allocated before the script that opens the ticket runs.
    tickets = [next(t for t in by_id.values() if not t.follow_up_of)]
    while len(tickets) < 3:
        tickets.append(next(t for t in by_id.values() if t.follow_up_of == tickets[-1].id))
    ticket_ids = [t.id for t in tickets]
    assert [t.message_count for t in tickets] == [10, 10, 10]
    assert [t.status for t in tickets] == [Status.CLOSED, Status.CLOSED, Status.NEW]
    assert [t.follow_up_of for t in tickets] == ["", ticket_ids[0], ticket_ids[1]]
    bodies = [b for t in ticket_ids for b in await all_events(store, t)]
    assert sorted(bodies) == sorted(m.body for m in messages)


async def test_concurrent_status_changes_leave_the_status_index_consistent(
    store: TicketStore,
) -> None:
    msg = inbound_message("x", address="whatsapp:+33699999999", at_ms=0)
    routed = await store.route_inbound(msg, RatingSignal(), ChannelPolicy(), now_ms=1)
    tid = routed.ticket_id or ""
    cycle = [Status.OPEN, Status.PENDING, Status.HOLD, Status.SOLVED] * 25
    await asyncio.gather(*(store.update_ticket(tid, author="a", now_ms=2, status=s)
                           for s in cycle))
    final = (await store.get_ticket(tid)).status
    member_of = [s for s in Status
                 if await store.redis.zscore(keys.index("status", s.value), tid)
                 is not None]
    assert member_of == [final]
