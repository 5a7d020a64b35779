"""The routing rules (DESIGN §2): does an inbound message continue a ticket or open one?

This module is the specification. The Redis store applies the same rules in one Lua script
(`bridge/store/route.lua`) for speed; tests/test_routing_agreement.py checks on random
histories that both make the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from bridge.core.policy import ChannelPolicy, SolvedReply
from bridge.core.tickets import SessionState, Status


class Action(StrEnum):
    DUPLICATE = "duplicate"  # provider retry: nothing happens
    CSAT_ANSWER = "csat_answer"  # rating recorded on the surveyed ticket
    NEW_TICKET = "new_ticket"  # no current ticket, or its session was ended
    FOLLOW_UP = "follow_up"  # new ticket linked to the previous one
    REOPEN = "reopen"  # solved -> open
    APPEND = "append"  # continue the current ticket


class CloseReason(StrEnum):
    THREAD_LIMIT = "thread_limit"


@dataclass(frozen=True)
class TicketView:
    """The part of the contact's current ticket that routing looks at."""

    id: str
    status: Status
    session: SessionState
    message_count: int
    created_at_ms: int


@dataclass(frozen=True)
class Survey:
    """An outstanding CSAT survey for one of the contact's tickets."""

    ticket_id: str
    message_id: str  # the outbound survey's provider id (Twilio SM…) once known
    # Starts the window in which a bare rating ("5", "bien") answers it. None: that window
    # is over early, the ticket having been reopened since; a button or a reply to the
    # survey still answers it.
    sent_at_ms: int | None


@dataclass(frozen=True)
class RatingSignal:
    """What the channel parser saw that may answer a survey (all optional)."""

    rating: int | None = None  # 1..5 from a payload, a word, a digit or an emoji
    payload_ticket_id: str = ""  # from a `csat:<ticket>:<score>` button payload
    replied_to_id: str = ""  # the provider id of the message the customer replied to


@dataclass(frozen=True)
class Decision:
    action: Action
    # The ticket that receives the message (existing id, or None when a new one is opened).
    ticket_id: str | None
    # The status of the receiving ticket after the message.
    status: Status | None
    # For FOLLOW_UP: the ticket the new one follows; for thread limits it is closed.
    previous_ticket_id: str | None = None
    close_previous: CloseReason | None = None
    rating: int | None = None

    @property
    def opens_ticket(self) -> bool:
        return self.action in (Action.NEW_TICKET, Action.FOLLOW_UP)


def answers_survey(
    survey: Survey | None, signal: RatingSignal, *, now_ms: int, window_s: int
) -> int | None:
    """The rating if the message answers the outstanding survey, else None."""
    if survey is None or signal.rating is None:
        return None
    if signal.payload_ticket_id:
        return signal.rating if signal.payload_ticket_id == survey.ticket_id else None
    if signal.replied_to_id and survey.message_id:
        return signal.rating if signal.replied_to_id == survey.message_id else None
    if survey.sent_at_ms is not None and now_ms - survey.sent_at_ms <= window_s * 1000:
        return signal.rating
    return None


def survey_after(decision: Decision, survey: Survey | None) -> Survey | None:
    """The outstanding survey once the message is routed: gone when answered (rating
    another surveyed ticket leaves it as it is). When the
    message reopens the surveyed ticket, bare ratings no longer answer it (the conversation
    goes on, and an "ok" in it is no rating) but its buttons still do; otherwise unchanged."""
    if survey is None:
        return None
    if decision.action is Action.CSAT_ANSWER:  # answered, unless another ticket was rated
        return None if decision.ticket_id == survey.ticket_id else survey
    if decision.action is Action.REOPEN and decision.ticket_id == survey.ticket_id:
        return replace(survey, sent_at_ms=None)
    return survey


def thread_limit_reached(ticket: TicketView, policy: ChannelPolicy, *, now_ms: int) -> bool:
    if ticket.message_count >= policy.max_thread_messages:
        return True
    age_limit_ms = policy.max_thread_age_s * 1000
    return age_limit_ms > 0 and now_ms - ticket.created_at_ms >= age_limit_ms


def route(
    *,
    seen: bool,
    current: TicketView | None,
    survey: Survey | None,
    signal: RatingSignal,
    policy: ChannelPolicy,
    now_ms: int,
    payload_ticket_surveyed: bool = False,
) -> Decision:
    """Decide what one inbound message does; the first matching row of DESIGN §2 wins.

    `payload_ticket_surveyed`: the ticket a survey button's payload names is one of this
    contact's and was surveyed (its survey may be answered already, or older than the one
    outstanding)."""
    if seen:
        return Decision(Action.DUPLICATE, None, None)
    rating = answers_survey(survey, signal, now_ms=now_ms, window_s=policy.csat_window_s)
    if rating is not None and survey is not None:
        return Decision(Action.CSAT_ANSWER, survey.ticket_id, None, rating=rating)
    if signal.rating is not None and signal.payload_ticket_id and payload_ticket_surveyed:
        # A survey's button tapped again (a changed mind) or an older survey's: the new
        # rating replaces that ticket's, and nothing reopens.
        return Decision(Action.CSAT_ANSWER, signal.payload_ticket_id, None,
                        rating=signal.rating)
    if current is None or current.session is SessionState.ENDED:
        return Decision(Action.NEW_TICKET, None, Status.NEW)
    if current.status is Status.CLOSED:
        return Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id=current.id)
    if current.status is Status.SOLVED:
        if policy.solved_reply is SolvedReply.FOLLOW_UP:
            return Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id=current.id)
        return Decision(Action.REOPEN, current.id, Status.OPEN)
    if thread_limit_reached(current, policy, now_ms=now_ms):
        return Decision(
            Action.FOLLOW_UP,
            None,
            Status.NEW,
            previous_ticket_id=current.id,
            close_previous=CloseReason.THREAD_LIMIT,
        )
    if current.status is Status.PENDING:
        return Decision(Action.APPEND, current.id, Status.OPEN)
    return Decision(Action.APPEND, current.id, current.status)
