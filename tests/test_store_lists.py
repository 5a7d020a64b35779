"""The Redis ticket store's reads: ticket lists (filters, cursor paging, a retry that
lists what a crash left unlisted) and thread paging."""

from __future__ import annotations

import pytest

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import Action, RatingSignal
from bridge.core.tickets import Status
from bridge.store.tickets import TicketStore
from tests.conftest import contact_id
from tests.factories import FIXED_NOW_MS, numbered_message, open_ticket

NOW = FIXED_NOW_MS
POLICY = ChannelPolicy()
msg = numbered_message


# ---------------------------------------------------------------- ticket lists


async def test_list_filters(store: TicketStore) -> None:
    wa1 = await open_ticket(store, "SM1", "whatsapp:+33600000001")
    wa2 = await open_ticket(store, "SM2", "whatsapp:US.13491208655302741918")
    web = await open_ticket(store, "W1", "visitor-abc", channel=Channel.WIDGET)
    await store.update_ticket(wa1, author="alice", now_ms=NOW, status=Status.OPEN,
                              assignee="alice")
    await store.update_ticket(web, author="alice", now_ms=NOW, status=Status.OPEN,
                              assignee="bob")

    async def ids(**filters: object) -> list[str]:
        page, cursor = await store.list_tickets(**filters)  # type: ignore[arg-type]
        assert cursor is None
        return [t.id for t in page]

    assert await ids() == [web, wa2, wa1]
    assert await ids(status=Status.OPEN) == [web, wa1]
    assert await ids(status=Status.NEW) == [wa2]
    assert await ids(status=Status.SOLVED) == []
    assert await ids(channel="whatsapp") == [wa2, wa1]
    assert await ids(channel="widget") == [web]
    assert await ids(assignee="alice") == [wa1]
    assert await ids(assignee="carol") == []
    us = contact_id(Channel.WHATSAPP, "whatsapp:US.13491208655302741918")
    assert await ids(contact_id=us) == [wa2]
    assert await ids(status=Status.OPEN, channel="whatsapp") == [wa1]
    assert await ids(status=Status.OPEN, assignee="bob", channel="widget") == [web]
    assert await ids(status=Status.NEW, assignee="bob") == []

    # Reassigning moves the ticket between assignee lists.
    await store.update_ticket(wa1, author="alice", now_ms=NOW, assignee="bob")
    assert await ids(assignee="alice") == []
    assert await ids(assignee="bob") == [web, wa1]
    # Routing keeps the status index current (pending -> open by a customer message).
    await store.update_ticket(wa1, author="alice", now_ms=NOW, status=Status.PENDING)
    assert await ids(status=Status.PENDING) == [wa1]
    await store.route_inbound(msg("SM3", "whatsapp:+33600000001"), RatingSignal(), POLICY,
                              now_ms=NOW + 1)
    assert await ids(status=Status.PENDING) == []
    assert await ids(status=Status.OPEN) == [web, wa1]


class _Crash(Exception):
    pass


async def test_a_retry_after_a_crash_before_the_index_update_lists_the_tickets(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    tid = await open_ticket(store)
    await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.CLOSED)

    async def crash(*args: object, **kwargs: object) -> None:
        raise _Crash  # the process died right after the routing script

    with monkeypatch.context() as patch:
        patch.setattr(store, "_reindex", crash)
        with pytest.raises(_Crash):
            await store.route_inbound(msg("SM2"), RatingSignal(), POLICY, now_ms=NOW + 1)
    follow_up = (await store.get_ticket(tid)).follow_ups[0]
    page, _ = await store.list_tickets()
    assert [t.id for t in page] == [tid]  # the follow-up is unlisted

    # No answer reached the provider, so it delivers the message again: a duplicate.
    retried = await store.route_inbound(msg("SM2"), RatingSignal(), POLICY, now_ms=NOW + 2)
    assert retried.action is Action.DUPLICATE
    page, _ = await store.list_tickets()
    assert [t.id for t in page] == [follow_up, tid]
    assert [t.id for t in (await store.list_tickets(status=Status.CLOSED))[0]] == [tid]
    assert [t.id for t in (await store.list_tickets(status=Status.NEW))[0]] == [follow_up]


async def test_cursor_paging_over_120_tickets(store: TicketStore) -> None:
    created = {await open_ticket(store, f"SM{i}", f"whatsapp:+3360000{i:04d}")
               for i in range(120)}
    assert len(created) == 120
    seen: list[int] = []
    sizes = []
    cursor: int | None = None
    for _ in range(10):
        page, cursor = await store.list_tickets(cursor=cursor, limit=50)
        sizes.append(len(page))
        seen += [int(t.id) for t in page]
        if cursor is None:
            break
        assert cursor == seen[-1]
    assert cursor is None
    assert sizes == [50, 50, 20]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 120
    assert {str(i) for i in seen} == created


async def test_cursor_paging_with_sparse_filters(store: TicketStore) -> None:
    """A filter that matches one ticket in three, combined with another: pages stay full and
    nothing is skipped or repeated."""
    pending: list[str] = []
    for i in range(60):
        tid = await open_ticket(store, f"SM{i}", f"whatsapp:+3360000{i:04d}")
        if i % 3 == 0:
            await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.PENDING,
                                      assignee="alice" if i % 2 else "bob")
            pending.append(tid)
        else:
            await store.update_ticket(tid, author="alice", now_ms=NOW, assignee="alice")
    want = list(reversed(pending))
    got: list[str] = []
    cursor: int | None = None
    while True:
        page, cursor = await store.list_tickets(status=Status.PENDING, cursor=cursor, limit=7)
        assert page, "an empty page with a cursor before it"
        got += [t.id for t in page]
        if cursor is None:
            break
        assert len(page) == 7
    assert got == want
    # status + assignee: the alice ones among the pending (odd i), read from the status
    # index and checked one by one. A full last page says there is no more.
    alice_pending = [t for t in want if (int(t) - 1) % 2]
    assert len(alice_pending) == 10
    for limit in (50, 10, 3):
        got, cursor = [], None
        while True:
            page, cursor = await store.list_tickets(status=Status.PENDING, assignee="alice",
                                                    cursor=cursor, limit=limit)
            assert page, f"an empty page with a cursor before it (limit {limit})"
            got += [t.id for t in page]
            if cursor is None:
                break
        assert got == alice_pending, limit


# ---------------------------------------------------------------- thread paging


async def test_events_newest_first_with_cursor(store: TicketStore) -> None:
    tid = await open_ticket(store, "SM0")
    for i in range(1, 130):
        r = await store.route_inbound(msg(f"SM{i}"), RatingSignal(), POLICY, now_ms=NOW + i)
        assert r.ticket_id == tid
    bodies: list[str] = []
    ids: list[str] = []
    sizes = []
    cursor: str | None = None
    while True:
        events, cursor = await store.events(tid, cursor=cursor, limit=50)
        sizes.append(len(events))
        bodies += [e.body for e in events]
        ids += [e.id for e in events]
        if cursor is None:
            break
        assert cursor == events[-1].id
    assert sizes == [50, 50, 30]
    assert bodies == [f"body SM{i}" for i in reversed(range(130))]
    assert len(set(ids)) == 130
    events, cursor = await store.events(tid, limit=130)
    assert len(events) == 130 and cursor is None
    assert events[0].at_ms == NOW + 129 and events[-1].at_ms == NOW
    assert events[0].data["provider_id"] == "SM129"
