"""The Redis ticket store: routing basics, agent updates, sessions, delivery states (lists
and thread paging: test_store_lists.py)."""

from __future__ import annotations

import pytest
import redis.asyncio
import redis.asyncio.client
from redis.exceptions import WatchError

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import Action, RatingSignal
from bridge.core.tickets import Delivery, EventType, SessionState, Status, TransitionError
from bridge.store import keys
from bridge.store.tickets import SERVICE_WINDOW_S, Conflict, NotFound, TicketStore
from tests.conftest import contact_id
from tests.factories import FIXED_NOW_MS, numbered_message, open_ticket

NOW = FIXED_NOW_MS
POLICY = ChannelPolicy()
msg = numbered_message


# ---------------------------------------------------------------- routing basics


async def test_new_ticket_fields_and_exact_times(store: TicketStore) -> None:
    tid = await open_ticket(store)
    t = await store.get_ticket(tid)
    assert t.status is Status.NEW and t.session is SessionState.ACTIVE
    assert t.created_at_ms == NOW and t.updated_at_ms == NOW
    assert t.message_count == 1 and t.channel == "whatsapp"
    assert t.contact_id == contact_id(Channel.WHATSAPP, msg("x").contact_address)
    contact = await store.get_contact(t.contact_id)
    assert contact.address == "whatsapp:+33612345678"
    # Every appended customer message refreshes the 24-hour window.
    assert contact.window_until_ms == NOW + SERVICE_WINDOW_S * 1000
    later = NOW + 3_600_001
    await store.route_inbound(msg("SM2"), RatingSignal(), POLICY, now_ms=later)
    contact = await store.get_contact(t.contact_id)
    assert contact.window_until_ms == later + SERVICE_WINDOW_S * 1000
    assert (await store.get_ticket(tid)).updated_at_ms == later


async def test_each_message_counts_once_and_moves_the_version_and_pending_reopens(
        store: TicketStore) -> None:
    """The counters a message writes (one HSET, from the values the script read)."""
    tid = await open_ticket(store)
    for i, now_ms in enumerate([NOW + 1, NOW + 2], start=2):
        await store.route_inbound(msg(f"SM{i}"), RatingSignal(), POLICY, now_ms=now_ms)
    t = await store.get_ticket(tid)
    assert (t.message_count, t.version, t.status, t.updated_at_ms) == (3, 3, Status.NEW, NOW + 2)
    await store.update_ticket(tid, status=Status.PENDING, author="agent", now_ms=NOW + 3)
    pending = await store.get_ticket(tid)
    result = await store.route_inbound(msg("SM9"), RatingSignal(), POLICY, now_ms=NOW + 9)
    t = await store.get_ticket(tid)
    assert result.status is Status.OPEN and t.status is Status.OPEN
    assert (t.message_count, t.version) == (4, pending.version + 1)


async def test_unknown_ticket_is_not_found(store: TicketStore) -> None:
    with pytest.raises(NotFound):
        await store.get_ticket("404")
    with pytest.raises(NotFound):
        await store.update_ticket("404", author="alice", now_ms=NOW, status=Status.OPEN)
    with pytest.raises(NotFound):
        await store.events("404")


async def test_csat_answer_by_button_payload(store: TicketStore,
                                             aredis: redis.asyncio.Redis) -> None:
    tid = await open_ticket(store)
    await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.SOLVED)
    cid = contact_id(Channel.WHATSAPP, msg("x").contact_address)
    await aredis.hset(keys.contact(cid), mapping={
        "survey_ticket": tid, "survey_msg": "SMsurvey", "survey_at_ms": str(NOW)})
    result = await store.route_inbound(msg("SM2", body="Great"), RatingSignal(5, tid), POLICY,
                                       now_ms=NOW + 10)
    assert (result.action, result.ticket_id, result.rating) == (Action.CSAT_ANSWER, tid, 5)
    t = await store.get_ticket(tid)
    assert t.csat_rating == 5 and t.status is Status.SOLVED and t.message_count == 1
    assert not await aredis.hexists(keys.contact(cid), "survey_ticket")
    # The survey is answered: the next bare rating is an ordinary message (reopens).
    again = await store.route_inbound(msg("SM3", body="5"), RatingSignal(5), POLICY,
                                      now_ms=NOW + 20)
    assert (again.action, again.ticket_id, again.status) == (Action.REOPEN, tid, Status.OPEN)


# ---------------------------------------------------------------- agent updates


@pytest.mark.parametrize("target", [Status.OPEN, Status.PENDING, Status.HOLD, Status.SOLVED,
                                    Status.CLOSED])
async def test_new_ticket_may_move_to_any_status(store: TicketStore, target: Status) -> None:
    tid = await open_ticket(store)
    t, eid = await store.update_ticket(tid, author="alice", now_ms=NOW + 5, status=target)
    assert t.status is target and eid is not None
    assert t.version == 2 and t.updated_at_ms == NOW + 5
    event = await store.get_event(tid, eid)
    assert event.type is EventType.STATUS_CHANGED and event.author == "alice"
    assert event.data == {"from": "new", "to": target.value}
    assert t.solved_at_ms == (NOW + 5 if target is Status.SOLVED else 0)
    assert t.closed_at_ms == (NOW + 5 if target is Status.CLOSED else 0)
    listed, _ = await store.list_tickets(status=target)
    assert [x.id for x in listed] == [tid]
    assert (await store.list_tickets(status=Status.NEW))[0] == []


@pytest.mark.parametrize("start", [Status.OPEN, Status.PENDING, Status.HOLD, Status.SOLVED])
async def test_never_back_to_new(store: TicketStore, start: Status) -> None:
    tid = await open_ticket(store)
    await store.update_ticket(tid, author="alice", now_ms=NOW, status=start)
    with pytest.raises(Conflict) as info:
        await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.NEW)
    assert info.value.code == "invalid_transition"
    assert (await store.get_ticket(tid)).status is start


async def test_setting_the_same_status_changes_nothing(store: TicketStore) -> None:
    tid = await open_ticket(store)
    t, eid = await store.update_ticket(tid, author="alice", now_ms=NOW + 9, status=Status.NEW)
    assert eid is None and t.version == 1 and t.updated_at_ms == NOW
    events, _ = await store.events(tid)
    assert [e.type for e in events] == [EventType.CUSTOMER_MESSAGE]


@pytest.mark.parametrize(
    "change",
    [
        {"status": Status.OPEN},
        {"status": Status.CLOSED},
        {"status": Status.NEW},
        {"assignee": "bob"},
        {"tags": ["vip"]},
        {"end_session_reason": "agent"},
    ],
    ids=["open", "closed-again", "new", "assignee", "tags", "end-session"],
)
async def test_closed_is_final(store: TicketStore, change: dict[str, object]) -> None:
    tid = await open_ticket(store)
    closed, _ = await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.CLOSED)
    with pytest.raises(Conflict) as info:
        await store.update_ticket(tid, author="alice", now_ms=NOW + 1, **change)  # type: ignore[arg-type]
    assert info.value.code == "ticket_closed"
    assert await store.get_ticket(tid) == closed


async def test_invalid_tags_are_refused_before_writing(store: TicketStore) -> None:
    tid = await open_ticket(store)
    t, _ = await store.update_ticket(tid, author="alice", now_ms=NOW, tags=[" VIP ", "vip",
                                                                            "billing:late"])
    assert t.tags == ("vip", "billing:late")
    with pytest.raises(TransitionError) as info:
        await store.update_ticket(tid, author="alice", now_ms=NOW, tags=["two words"])
    assert info.value.code == "invalid_tag"
    assert (await store.get_ticket(tid)).tags == ("vip", "billing:late")


async def test_end_session_then_next_message_opens_a_new_ticket(store: TicketStore) -> None:
    tid = await open_ticket(store)
    await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.PENDING)
    t, eid = await store.update_ticket(tid, author="alice", now_ms=NOW + 1,
                                       end_session_reason="agent_ended")
    assert t.session is SessionState.ENDED and t.session_ended_reason == "agent_ended"
    assert t.status is Status.PENDING  # ending the session does not change the status
    assert eid is not None
    assert (await store.get_event(tid, eid)).type is EventType.SESSION_ENDED
    with pytest.raises(Conflict) as info:
        await store.update_ticket(tid, author="alice", now_ms=NOW + 2, end_session_reason="x")
    assert info.value.code == "session_ended"
    # Agents can still add internal notes.
    note = await store.add_event(tid, EventType.NOTE, author="alice", body="called them",
                                 now_ms=NOW + 3)
    assert note.body == "called them" and note.delivery is None

    result = await store.route_inbound(msg("SM2"), RatingSignal(), POLICY, now_ms=NOW + 4)
    assert result.action is Action.NEW_TICKET and result.status is Status.NEW
    assert result.ticket_id not in (None, tid) and result.previous_ticket_id is None
    new = await store.get_ticket(result.ticket_id or "")
    assert new.session is SessionState.ACTIVE and new.follow_up_of == ""
    old = await store.get_ticket(tid)
    assert old.status is Status.PENDING and old.message_count == 1
    # And the one after that continues the new ticket.
    third = await store.route_inbound(msg("SM3"), RatingSignal(), POLICY, now_ms=NOW + 5)
    assert (third.action, third.ticket_id) == (Action.APPEND, new.id)


async def test_closed_ticket_gets_a_linked_follow_up(store: TicketStore) -> None:
    tid = await open_ticket(store)
    await store.update_ticket(tid, author="alice", now_ms=NOW, status=Status.CLOSED)
    result = await store.route_inbound(msg("SM2"), RatingSignal(), POLICY, now_ms=NOW + 1)
    assert result.action is Action.FOLLOW_UP and result.previous_ticket_id == tid
    old = await store.get_ticket(tid)
    assert old.status is Status.CLOSED and old.follow_ups == (result.ticket_id,)
    assert (await store.get_ticket(result.ticket_id or "")).follow_up_of == tid


# ---------------------------------------------------------------- delivery states


async def outbound(store: TicketStore, tid: str, sid: str) -> str:
    _, eid = await store.update_ticket(tid, author="alice", now_ms=NOW,
                                       event=(EventType.AGENT_REPLY, "hello", {}))
    assert eid is not None
    assert (await store.get_event(tid, eid)).delivery is Delivery.QUEUED
    await store.set_delivery(tid, eid, {"state": "sent", "provider_id": sid})
    return eid


async def test_status_callbacks_only_move_forward(store: TicketStore) -> None:
    tid = await open_ticket(store)
    eid = await outbound(store, tid, "SMout1")
    steps = [
        (Delivery.QUEUED, False),  # backwards
        (Delivery.SENDING, False),
        (Delivery.SENT, False),  # duplicate
        (Delivery.DELIVERED, True),
        (Delivery.DELIVERED, False),
        (Delivery.SENT, False),
        (Delivery.READ, True),
        (Delivery.DELIVERED, False),
        (Delivery.READ, False),
    ]
    for delivery, changed in steps:
        assert await store.record_status_callback("SMout1", delivery) is changed, delivery
    event = await store.get_event(tid, eid)
    assert event.delivery is Delivery.READ and event.body == "hello"
    events, _ = await store.events(tid)
    assert events[0].id == eid and events[0].delivery is Delivery.READ
    assert await store.record_status_callback("SMunknown", Delivery.READ) is False


async def test_callbacks_that_beat_the_worker_are_parked_then_applied(
        store: TicketStore, aredis: redis.asyncio.Redis) -> None:
    """Twilio can call back before the worker has recorded the message sid."""
    tid = await open_ticket(store)
    _, eid = await store.update_ticket(tid, author="alice", now_ms=NOW,
                                       event=(EventType.AGENT_REPLY, "hello", {}))
    assert eid is not None
    await store.set_delivery(tid, eid, {"state": "sending", "attempts": "1"})
    for early in (Delivery.DELIVERED, Delivery.SENT, Delivery.READ):  # out of order
        assert await store.record_status_callback("SMfast", early) is False
    assert (await store.get_event(tid, eid)).delivery is Delivery.SENDING
    parked = keys.early_status("SMfast")
    assert await aredis.llen(parked) == 3
    assert 0 < await aredis.ttl(parked) <= 600  # an unknown sid's callbacks expire
    await store.set_delivery(tid, eid, {"state": "queued", "provider_id": "SMfast"})
    assert (await store.get_event(tid, eid)).delivery is Delivery.READ
    assert await aredis.exists(parked) == 0
    # From now on callbacks apply directly.
    assert await store.record_status_callback("SMfast", Delivery.READ) is False
    assert await aredis.exists(parked) == 0


async def test_failed_is_terminal(store: TicketStore) -> None:
    tid = await open_ticket(store)
    eid = await outbound(store, tid, "SMout2")
    assert await store.record_status_callback("SMout2", Delivery.FAILED, error_code="63016",
                                              error_message="outside the window") is True
    for later in (Delivery.FAILED, Delivery.DELIVERED, Delivery.READ, Delivery.UNDELIVERED):
        assert await store.record_status_callback("SMout2", later) is False, later
    event = await store.get_event(tid, eid)
    assert event.delivery is Delivery.FAILED
    assert (event.error_code, event.error_message) == ("63016", "outside the window")
    state = await store.delivery_state(tid, eid)
    assert state["provider_id"] == "SMout2"


async def test_undelivered_after_delivered_is_recorded_then_final(store: TicketStore) -> None:
    tid = await open_ticket(store)
    eid = await outbound(store, tid, "SMout3")
    assert await store.record_status_callback("SMout3", Delivery.DELIVERED) is True
    assert await store.record_status_callback("SMout3", Delivery.UNDELIVERED,
                                              error_code="30008") is True
    assert await store.record_status_callback("SMout3", Delivery.READ) is False
    assert (await store.get_event(tid, eid)).delivery is Delivery.UNDELIVERED


async def test_reply_to_the_linked_survey_message_is_the_answer(
    store: TicketStore, aredis: redis.asyncio.Redis
) -> None:
    tid = await open_ticket(store)
    ticket = await store.get_ticket(tid)
    await aredis.hset(keys.contact(ticket.contact_id),
                      mapping={"survey_ticket": tid, "survey_at_ms": "0"})
    survey_sid = "SM" + "5" * 32
    await store.link_survey_message(ticket.contact_id, tid, survey_sid)
    await store.link_survey_message(ticket.contact_id, "other", "SM" + "6" * 32)  # ignored
    # Long after the bare-rating window: only the reply link makes "4" an answer.
    late = 10 * 24 * 3600 * 1000
    answer = msg("SM9", body="4")
    result = await store.route_inbound(
        answer, RatingSignal(rating=4, replied_to_id=survey_sid), ChannelPolicy(), now_ms=late)
    assert result.action is Action.CSAT_ANSWER and result.rating == 4
    assert (await store.get_ticket(tid)).status is ticket.status


@pytest.fixture
def exec_reply_lost_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next MULTI/EXEC runs in Redis but its reply is lost: redis-py reports that as a
    WatchError, the way it reports a watched key that changed."""
    real = redis.asyncio.client.Pipeline.execute
    lost: list[int] = []

    async def execute(self: redis.asyncio.client.Pipeline, raise_on_error: bool = True
                      ) -> list[object]:
        explicit = self.explicit_transaction
        results: list[object] = await real(self, raise_on_error)
        if explicit and not lost:
            lost.append(1)
            raise WatchError("A ConnectionError occurred while watching one or more keys")
        return results

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", execute)
    return lost


async def test_an_update_whose_reply_was_lost_is_not_applied_twice(
        store: TicketStore, exec_reply_lost_once: list[int]) -> None:
    routed = await store.route_inbound(msg("SM1"), RatingSignal(), POLICY, now_ms=NOW)
    assert routed.ticket_id
    before = await store.get_ticket(routed.ticket_id)
    ticket, eid = await store.update_ticket(
        routed.ticket_id, author="alice", now_ms=NOW + 1000, status=Status.PENDING,
        event=(EventType.AGENT_REPLY, "Pouvez-vous préciser ?", {}))
    assert exec_reply_lost_once == [1]  # it did happen
    assert ticket.status is Status.PENDING and ticket.version == before.version + 1
    events, _ = await store.events(routed.ticket_id, limit=10)
    replies = [e for e in events if e.type is EventType.AGENT_REPLY]
    changes = [e for e in events if e.type is EventType.STATUS_CHANGED]
    assert [e.id for e in replies] == [eid]
    assert len(changes) == 1
    assert (await store.get_event(routed.ticket_id, eid)).body == "Pouvez-vous préciser ?"
