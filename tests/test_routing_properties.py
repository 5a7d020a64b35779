"""Property tests: random histories applied to a small pure model built on `route()`.

The model (`Model`) is also the reference that tests/test_routing_agreement.py compares the
Redis store against, so it mirrors what the store does with each decision: a follow-up ends
the previous ticket's session (and closes it for a thread limit), a CSAT answer clears the
outstanding survey, agents change statuses through `check_transition` and may end an active
session of a ticket that is not closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.policy import ChannelPolicy, SolvedReply
from bridge.core.routing import (
    Action,
    Decision,
    RatingSignal,
    Survey,
    TicketView,
    route,
    survey_after,
)
from bridge.core.tickets import SessionState, Status, TransitionError, check_transition

START_MS = 1_700_000_000_000
SURVEY_MSG_IDS = ("", "SMs1", "SMs2")
BOGUS_TICKET = "x999"

# ---------------------------------------------------------------- history operations


@dataclass(frozen=True)
class Msg:
    contact: int
    pid: str
    kind: str  # text | bare | payload | payload_wrong | reply | reply_text
    rating: int = 5
    ticket_ref: int = -1  # for payloads: -1 the current ticket, else an index (mod count)
    reply_to: str = ""


@dataclass(frozen=True)
class SetStatus:
    contact: int
    ticket_ref: int
    status: Status


@dataclass(frozen=True)
class EndSession:
    contact: int
    ticket_ref: int


@dataclass(frozen=True)
class SendSurvey:
    contact: int
    ticket_ref: int
    message_id: str


@dataclass(frozen=True)
class Advance:
    seconds: int


Op = Msg | SetStatus | EndSession | SendSurvey | Advance


def histories(
    *, contacts: int = 2, min_size: int = 5, max_size: int = 40
) -> st.SearchStrategy[list[Op]]:
    contact = st.integers(0, contacts - 1)
    # Mostly the current ticket; sometimes an older one.
    ref = st.sampled_from([-1, -1, -1, 0, 1, 2])
    status = st.sampled_from(
        [Status.SOLVED, Status.SOLVED, Status.PENDING, Status.CLOSED, *Status]
    )
    msg = st.builds(
        Msg,
        contact=contact,
        # A small pool of provider ids: repeats are provider retries.
        pid=st.sampled_from([f"SM{i}" for i in range(12)]),
        kind=st.sampled_from(
            ["text", "text", "text", "bare", "payload", "payload_wrong", "reply", "reply_text"]
        ),
        rating=st.integers(1, 5),
        ticket_ref=ref,
        reply_to=st.sampled_from(SURVEY_MSG_IDS[1:]),
    )
    kinds: dict[str, st.SearchStrategy[Op]] = {
        "msg": msg,
        "status": st.builds(SetStatus, contact=contact, ticket_ref=ref, status=status),
        "end": st.builds(EndSession, contact=contact, ticket_ref=ref),
        "survey": st.builds(SendSurvey, contact=contact, ticket_ref=ref,
                            message_id=st.sampled_from(SURVEY_MSG_IDS)),
        "advance": st.builds(Advance, seconds=st.sampled_from([0, 1, 10, 30, 31, 60, 61])),
    }
    # About two operations in three are inbound messages.
    weights = ["msg"] * 10 + ["status"] * 3 + ["end", "survey", "survey", "advance", "advance"]
    op = st.sampled_from(weights).flatmap(kinds.__getitem__)
    return st.lists(op, min_size=min_size, max_size=max_size)


policies = st.builds(
    ChannelPolicy,
    solved_reply=st.sampled_from(SolvedReply),
    max_thread_messages=st.integers(1, 4),
    max_thread_age_s=st.sampled_from([0, 60]),
    csat_window_s=st.sampled_from([0, 30]),
)

# ---------------------------------------------------------------- the pure model


@dataclass
class MTicket:
    id: str
    contact: int
    status: Status
    created_at_ms: int
    session: SessionState = SessionState.ACTIVE
    messages: list[str] = field(default_factory=list)
    ratings: list[tuple[str, int]] = field(default_factory=list)
    surveyed: bool = False
    follow_up_of: str = ""
    closed_reason: str = ""
    history: list[Status] = field(default_factory=list)

    def set_status(self, status: Status) -> None:
        if status is not self.status:
            self.status = status
            self.history.append(status)


@dataclass
class MContact:
    current: str | None = None
    seen: set[str] = field(default_factory=set)
    survey: Survey | None = None
    tickets: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)


class Model:
    def __init__(self, policy: ChannelPolicy) -> None:
        self.policy = policy
        self.tickets: dict[str, MTicket] = {}
        self.contacts: dict[int, MContact] = {}
        self._next = 0

    def contact(self, c: int) -> MContact:
        return self.contacts.setdefault(c, MContact())

    def resolve(self, c: int, ref: int) -> str | None:
        """The model ticket id an operation refers to (None if the contact has none)."""
        contact = self.contact(c)
        if not contact.tickets:
            return None
        if ref < 0:
            return contact.current
        return contact.tickets[ref % len(contact.tickets)]

    def signal(self, m: Msg, id_of: Callable[[str], str] = lambda t: t) -> RatingSignal:
        """The message's rating signal, ticket ids translated by id_of."""
        if m.kind == "bare":
            return RatingSignal(m.rating)
        if m.kind == "payload":
            tid = self.resolve(m.contact, m.ticket_ref)
            return RatingSignal(m.rating, id_of(tid) if tid else BOGUS_TICKET)
        if m.kind == "payload_wrong":
            return RatingSignal(m.rating, BOGUS_TICKET)
        if m.kind == "reply":
            return RatingSignal(m.rating, "", m.reply_to)
        if m.kind == "reply_text":
            return RatingSignal(None, "", m.reply_to)
        return RatingSignal()

    def _open(self, c: int, now_ms: int, follow_up_of: str = "") -> MTicket:
        self._next += 1
        t = MTicket(f"m{self._next}", c, Status.NEW, now_ms, follow_up_of=follow_up_of,
                    history=[Status.NEW])
        self.tickets[t.id] = t
        contact = self.contact(c)
        contact.tickets.append(t.id)
        contact.current = t.id
        return t

    def inbound(self, m: Msg, now_ms: int) -> Decision:
        contact = self.contact(m.contact)
        cur = self.tickets[contact.current] if contact.current else None
        view = (
            TicketView(cur.id, cur.status, cur.session, len(cur.messages), cur.created_at_ms)
            if cur else None
        )
        signal = self.signal(m)
        named = signal.payload_ticket_id
        d = route(seen=m.pid in contact.seen, current=view, survey=contact.survey,
                  signal=signal, policy=self.policy, now_ms=now_ms,
                  payload_ticket_surveyed=named in contact.tickets
                  and self.tickets[named].surveyed)
        if d.action is Action.DUPLICATE:
            assert m.pid in contact.seen
            return d
        assert m.pid not in contact.seen
        contact.seen.add(m.pid)
        contact.accepted.append(m.pid)
        contact.survey = survey_after(d, contact.survey)
        if d.action is Action.CSAT_ANSWER:
            assert d.ticket_id is not None and d.rating is not None
            assert self.tickets[d.ticket_id].surveyed and d.ticket_id in contact.tickets
            self.tickets[d.ticket_id].ratings.append((m.pid, d.rating))
        elif d.opens_ticket:
            assert d.status is Status.NEW and d.ticket_id is None
            if d.action is Action.FOLLOW_UP:
                assert cur is not None and d.previous_ticket_id == cur.id
                if d.close_previous is not None:
                    assert cur.status is not Status.CLOSED
                    cur.set_status(Status.CLOSED)
                    cur.closed_reason = d.close_previous.value
                cur.session = SessionState.ENDED
            else:
                assert d.previous_ticket_id is None
            new = self._open(m.contact, now_ms, follow_up_of=d.previous_ticket_id or "")
            new.messages.append(m.pid)
        else:
            assert cur is not None and d.ticket_id == cur.id and d.status is not None
            cur.set_status(d.status)
            cur.messages.append(m.pid)
        return d

    def set_status(self, tid: str, status: Status) -> bool:
        t = self.tickets[tid]
        try:
            check_transition(t.status, status)
        except TransitionError:
            return False
        t.set_status(status)
        return True

    def end_session(self, tid: str) -> bool:
        t = self.tickets[tid]
        if t.status is Status.CLOSED or t.session is SessionState.ENDED:
            return False
        t.session = SessionState.ENDED
        return True

    def send_survey(self, tid: str, message_id: str, now_ms: int) -> None:
        t = self.tickets[tid]
        t.surveyed = True
        self.contact(t.contact).survey = Survey(tid, message_id, now_ms)


# ---------------------------------------------------------------- invariants


def check_invariants(model: Model, closed_snapshots: dict[str, tuple[object, ...]]) -> None:
    for c, contact in model.contacts.items():
        live = [
            tid for tid in contact.tickets
            if model.tickets[tid].session is SessionState.ACTIVE
            and model.tickets[tid].status is not Status.CLOSED
        ]
        assert len(live) <= 1, f"contact {c} has live tickets {live}"
        if live:
            assert live == [contact.current]
        # Every accepted message is stored exactly once (as a message or a rating), and the
        # customer messages read ticket after ticket are in arrival order.
        stored_msgs = [p for tid in contact.tickets for p in model.tickets[tid].messages]
        stored_ratings = [p for tid in contact.tickets for p, _ in model.tickets[tid].ratings]
        assert sorted(stored_msgs + stored_ratings) == sorted(contact.accepted)
        assert len(set(contact.accepted)) == len(contact.accepted)
        rating_set = set(stored_ratings)
        assert stored_msgs == [p for p in contact.accepted if p not in rating_set]
    for t in model.tickets.values():
        # `new` is never re-entered once left.
        assert t.history[0] is Status.NEW
        assert Status.NEW not in t.history[1:]
        snap = (t.status, tuple(t.messages), t.follow_up_of, t.closed_reason)
        if t.id in closed_snapshots:
            assert snap == closed_snapshots[t.id], f"closed ticket {t.id} changed"
        elif t.status is Status.CLOSED:
            closed_snapshots[t.id] = snap
        if t.closed_reason:
            assert t.status is Status.CLOSED


def run_model(policy: ChannelPolicy, history: list[Op]) -> Model:
    model = Model(policy)
    now = START_MS
    snapshots: dict[str, tuple[object, ...]] = {}
    for op in history:
        if isinstance(op, Advance):
            now += op.seconds * 1000
        elif isinstance(op, Msg):
            before = model.tickets.get(model.contact(op.contact).current or "")
            was_live = before is not None and (
                before.session is SessionState.ACTIVE and before.status is not Status.CLOSED)
            d = model.inbound(op, now)
            if d.action not in (Action.DUPLICATE, Action.CSAT_ANSWER):
                # A customer message always lands in a live ticket (an agent can answer it
                # on the channel), the contact's current one, as its last message.
                receiver = model.tickets[model.contact(op.contact).current or ""]
                assert receiver.session is SessionState.ACTIVE
                assert receiver.status is not Status.CLOSED
                assert receiver.messages[-1] == op.pid
                # An unlinked new ticket only when there was no live ticket to continue.
                if d.action is Action.NEW_TICKET:
                    assert not was_live
        else:
            tid = model.resolve(op.contact, op.ticket_ref)
            if tid is None:
                continue
            if isinstance(op, SetStatus):
                old_status = model.tickets[tid].status
                ok = model.set_status(tid, op.status)
                assert ok == (old_status is not Status.CLOSED
                              and not (op.status is Status.NEW and old_status is not Status.NEW))
            elif isinstance(op, EndSession):
                model.end_session(tid)
            else:
                model.send_survey(tid, op.message_id, now)
        check_invariants(model, snapshots)
    return model


@settings(max_examples=400, deadline=None)
@given(policy=policies, history=histories())
def test_random_histories_keep_invariants(policy: ChannelPolicy, history: list[Op]) -> None:
    run_model(policy, history)


@settings(max_examples=200, deadline=None)
@given(policy=policies, history=histories(contacts=1, max_size=60))
def test_thread_sizes_respect_the_limit(policy: ChannelPolicy, history: list[Op]) -> None:
    """No ticket holds more customer messages than max_thread_messages, except that the
    solved row comes before the thread-limit row (DESIGN §2): each reopen of a solved ticket
    may add one message past the limit. A follow-up is linked to the ticket it follows."""
    model = run_model(policy, history)
    for t in model.tickets.values():
        assert len(t.messages) <= policy.max_thread_messages + t.history.count(Status.SOLVED)
        if t.follow_up_of:
            prev = model.tickets[t.follow_up_of]
            assert prev.session is SessionState.ENDED
            assert prev.contact == t.contact


def test_model_sanity_duplicates_and_thread_limit() -> None:
    """A concrete history through the model, to pin what the generated ones exercise."""
    policy = ChannelPolicy(max_thread_messages=2)
    model = Model(policy)
    actions = [model.inbound(Msg(0, pid, "text"), START_MS).action
               for pid in ("a", "b", "a", "c")]
    assert actions == [Action.NEW_TICKET, Action.APPEND, Action.DUPLICATE, Action.FOLLOW_UP]
    first, second = model.contact(0).tickets
    assert model.tickets[first].status is Status.CLOSED
    assert model.tickets[first].closed_reason == "thread_limit"
    assert model.tickets[second].messages == ["c"]
    assert model.tickets[second].follow_up_of == first
