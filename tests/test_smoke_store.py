from __future__ import annotations

from bridge.core.messages import InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import Action, RatingSignal
from bridge.core.tickets import Status
from bridge.store.tickets import TicketStore
from tests.factories import inbound_message


def msg(sid: str, body: str = "hi", address: str = "whatsapp:+33612345678") -> InboundMessage:
    return inbound_message(body, sid=sid, address=address, at_ms=0)


async def test_first_message_opens_ticket_then_appends(store: TicketStore) -> None:
    r1 = await store.route_inbound(msg("SM1"), RatingSignal(), ChannelPolicy(), now_ms=1000)
    r2 = await store.route_inbound(msg("SM2"), RatingSignal(), ChannelPolicy(), now_ms=2000)
    r3 = await store.route_inbound(msg("SM2"), RatingSignal(), ChannelPolicy(), now_ms=3000)
    assert (r1.action, r2.action, r3.action) == (Action.NEW_TICKET, Action.APPEND, Action.DUPLICATE)
    assert r1.ticket_id == r2.ticket_id
    t = await store.get_ticket(r1.ticket_id or "")
    assert t.status is Status.NEW and t.message_count == 2
    events, cursor = await store.events(t.id)
    assert [e.body for e in events] == ["hi", "hi"] and cursor is None
    page, nxt = await store.list_tickets(status=Status.NEW)
    assert [p.id for p in page] == [t.id] and nxt is None
