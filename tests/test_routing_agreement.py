"""The Lua routing script (bridge/store/route.lua) agrees with the pure rules (DESIGN §2).

Hypothesis generates random histories (provider retries, ratings of every kind, surveys,
agent status changes and session ends, time passing) for two contacts; each history is
applied both to the real Redis store and to the pure model of tests/test_routing_properties,
and every decision, then the final state of every ticket, must match.
"""

from __future__ import annotations

import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.messages import InboundMessage
from bridge.core.policy import ChannelPolicy, SolvedReply
from bridge.core.routing import Action
from bridge.core.tickets import EventType, SessionState, Status
from bridge.store import keys
from bridge.store.tickets import Conflict, TicketStore
from tests.conftest import contact_id
from tests.factories import inbound_message
from tests.test_routing_properties import (
    START_MS,
    Advance,
    EndSession,
    Model,
    Msg,
    Op,
    SendSurvey,
    SetStatus,
    histories,
)

ADDRESSES = ("whatsapp:+33612345670", "whatsapp:US.13491208655302741918")

small_policies = st.builds(
    ChannelPolicy,
    solved_reply=st.sampled_from(SolvedReply),
    max_thread_messages=st.sampled_from([2, 3]),
    max_thread_age_s=st.sampled_from([0, 60]),
    csat_window_s=st.just(30),
)


def _cid(msg: InboundMessage) -> str:
    return contact_id(msg.channel, msg.contact_address)


def inbound(m: Msg, now_ms: int) -> InboundMessage:
    return inbound_message(f"body of {m.pid}", sid=m.pid, address=ADDRESSES[m.contact],
                           at_ms=now_ms)


class Agreement:
    """Applies one history to both sides, checking each step."""

    def __init__(self, store: TicketStore, aredis: redis.asyncio.Redis,
                 policy: ChannelPolicy) -> None:
        self.store = store
        self.aredis = aredis
        self.policy = policy
        self.model = Model(policy)
        self.ids: dict[str, str] = {}  # model ticket id -> store ticket id
        self.now = START_MS
        self.actions: list[Action] = []

    def sid(self, mid: str | None) -> str | None:
        return None if mid is None else self.ids[mid]

    async def message(self, m: Msg) -> None:
        # The signal is built before routing, from the tickets that exist now.
        signal = self.model.signal(m, id_of=lambda mid: self.ids[mid])
        got = await self.store.route_inbound(inbound(m, self.now), signal, self.policy,
                                             now_ms=self.now)
        want = self.model.inbound(m, self.now)
        self.actions.append(got.action)
        where = f"{m} at +{(self.now - START_MS) // 1000}s"
        assert got.action is want.action, where
        assert got.status == want.status, where
        assert got.rating == want.rating, where
        assert got.previous_ticket_id == self.sid(want.previous_ticket_id), where
        want_reason = want.close_previous.value if want.close_previous else None
        assert got.close_reason == want_reason, where
        if want.opens_ticket:
            new_mid = self.model.contact(m.contact).current
            assert new_mid is not None and new_mid not in self.ids
            assert got.ticket_id is not None and got.ticket_id not in self.ids.values()
            self.ids[new_mid] = got.ticket_id
        else:
            assert got.ticket_id == self.sid(want.ticket_id), where
        if want.action is Action.DUPLICATE:
            assert got.event_id is None
        else:
            assert got.event_id

    async def agent(self, op: SetStatus | EndSession | SendSurvey) -> None:
        mid = self.model.resolve(op.contact, op.ticket_ref)
        if mid is None:
            return
        tid = self.ids[mid]
        if isinstance(op, SendSurvey):
            self.model.send_survey(mid, op.message_id, self.now)
            # As bridge/sending.py writes them: survey_msg only once the provider id is known.
            cid = _cid(inbound(Msg(op.contact, "", "text"), self.now))
            key = keys.contact(cid)
            await self.aredis.hset(key, mapping={"survey_ticket": tid,
                                                 "survey_at_ms": str(self.now)})
            await self.aredis.hset(keys.ticket(cid, tid), "csat_sent_at_ms", str(self.now))
            if op.message_id:
                await self.aredis.hset(key, "survey_msg", op.message_id)
            else:
                await self.aredis.hdel(key, "survey_msg")
            return
        try:
            if isinstance(op, SetStatus):
                await self.store.update_ticket(tid, author="agent", now_ms=self.now,
                                               status=op.status)
            else:
                await self.store.update_ticket(tid, author="agent", now_ms=self.now,
                                               end_session_reason="agent")
            accepted = True
        except Conflict:
            accepted = False
        if isinstance(op, SetStatus):
            assert accepted == self.model.set_status(mid, op.status), op
        else:
            assert accepted == self.model.end_session(mid), op

    async def run(self, history: list[Op]) -> None:
        for op in history:
            if isinstance(op, Advance):
                self.now += op.seconds * 1000
            elif isinstance(op, Msg):
                await self.message(op)
            else:
                await self.agent(op)
        await self.compare_final_state()

    async def compare_final_state(self) -> None:
        assert set(self.ids) == set(self.model.tickets)
        for mid, mt in self.model.tickets.items():
            t = await self.store.get_ticket(self.ids[mid])
            assert t.status is mt.status, mid
            assert t.session is mt.session, mid
            assert t.message_count == len(mt.messages), mid
            assert t.follow_up_of == (self.ids[mt.follow_up_of] if mt.follow_up_of else "")
            assert t.closed_reason == mt.closed_reason, mid
            assert t.csat_rating == (mt.ratings[-1][1] if mt.ratings else 0), mid
            events, _ = await self.store.events(t.id, limit=200)
            events.reverse()
            customer = [e.data["provider_id"] for e in events
                        if e.type is EventType.CUSTOMER_MESSAGE]
            assert customer == mt.messages, mid
            assert [e.body for e in events if e.type is EventType.CUSTOMER_MESSAGE] == [
                f"body of {p}" for p in mt.messages
            ]
            answers = [(e.data["provider_id"], e.data["rating"]) for e in events
                       if e.type is EventType.CSAT_ANSWERED]
            assert answers == mt.ratings, mid
        for c, mc in self.model.contacts.items():
            cid = _cid(inbound(Msg(c, "", "text"), self.now))
            raw = await self.aredis.hgetall(keys.contact(cid))
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            assert fields.get("cur", "") == (self.ids[mc.current] if mc.current else "")
            assert ("survey_ticket" in fields) == (mc.survey is not None)
            assert ("survey_at_ms" in fields) == (mc.survey is not None
                                                  and mc.survey.sent_at_ms is not None)
            seen = {p.decode() for p in await self.aredis.zrange(keys.seen(cid), 0, -1)}
            assert seen == mc.seen


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy=small_policies, history=histories(min_size=15, max_size=50))
async def test_store_and_pure_rules_agree(
    store: TicketStore, aredis: redis.asyncio.Redis, policy: ChannelPolicy, history: list[Op]
) -> None:
    await aredis.flushdb()
    # A fresh store per example: ticket ids reserved before the flush would collide with
    # the restarted sequence.
    fresh = TicketStore(aredis, contact_key=store.contact_key)
    await Agreement(fresh, aredis, policy).run(history)


async def test_agreement_on_a_pinned_history(
    store: TicketStore, aredis: redis.asyncio.Redis
) -> None:
    """One hand-written history through every row, so the rows are covered every run."""
    policy = ChannelPolicy(max_thread_messages=3, max_thread_age_s=60, csat_window_s=30)
    history: list[Op] = [
        Msg(0, "SM1", "text"),  # no ticket -> new
        Msg(0, "SM1", "text"),  # duplicate
        SetStatus(0, -1, Status.PENDING),
        Msg(0, "SM2", "text"),  # pending -> open
        SetStatus(0, -1, Status.SOLVED),
        SendSurvey(0, -1, "SMs1"),
        Msg(0, "SM3", "reply", rating=4, reply_to="SMs1"),  # csat via replied-to
        Msg(0, "SM4", "text"),  # solved -> reopen
        Msg(0, "SM5", "text"),  # count limit -> follow-up, closes previous
        SetStatus(0, -1, Status.HOLD),
        Advance(61),
        Msg(0, "SM6", "text"),  # age limit -> follow-up
        EndSession(0, -1),
        Msg(0, "SM7", "text"),  # session ended -> new ticket
        SetStatus(0, -1, Status.CLOSED),
        SetStatus(0, -1, Status.OPEN),  # refused: closed is final
        EndSession(0, -1),  # refused: closed is final
        Msg(0, "SM8", "text"),  # closed -> follow-up
        SendSurvey(0, 0, ""),
        Advance(30),
        Msg(0, "SM9", "payload_wrong", rating=2),  # not an answer: appends, new stays new
        Msg(0, "SM10", "bare", rating=5),  # bare rating at the window's edge -> answer
        SendSurvey(0, -1, ""),
        Advance(31),
        Msg(0, "SM11", "bare", rating=1),  # outside the window; m5 is 61 s old -> follow-up
        Msg(0, "SM12", "text"),  # new stays new
    ]
    agreement = Agreement(store, aredis, policy)
    await agreement.run(history)
    A = Action
    assert agreement.actions == [
        A.NEW_TICKET, A.DUPLICATE, A.APPEND, A.CSAT_ANSWER, A.REOPEN, A.FOLLOW_UP,
        A.FOLLOW_UP, A.NEW_TICKET, A.FOLLOW_UP, A.APPEND, A.CSAT_ANSWER, A.FOLLOW_UP, A.APPEND,
    ]
    tickets = [await store.get_ticket(agreement.ids[m]) for m in agreement.model.contact(0).tickets]
    assert [t.status for t in tickets] == [
        Status.CLOSED, Status.CLOSED, Status.NEW, Status.CLOSED, Status.CLOSED, Status.NEW,
    ]
    assert [t.session for t in tickets] == [SessionState.ENDED] * 5 + [SessionState.ACTIVE]
    assert [t.closed_reason for t in tickets] == [
        "thread_limit", "thread_limit", "", "", "thread_limit", "",
    ]
    # The bare 5 answered the survey on the first (closed) ticket; the replied-to 4 before it.
    assert tickets[0].csat_rating == 5
    assert list(tickets[0].follow_ups) == [tickets[1].id]
    assert tickets[4].follow_up_of == tickets[3].id
    assert tickets[2].follow_up_of == tickets[1].id
    assert tickets[3].follow_up_of == ""  # a new session is not a follow-up
