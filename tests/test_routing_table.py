"""Table tests of the pure routing function: every row of DESIGN §2, in order."""

from __future__ import annotations

import pytest

from bridge.core.policy import ChannelPolicy, SolvedReply
from bridge.core.routing import (
    Action,
    CloseReason,
    Decision,
    RatingSignal,
    Survey,
    TicketView,
    answers_survey,
    route,
    survey_after,
    thread_limit_reached,
)
from bridge.core.tickets import SessionState, Status

NOW = 1_700_000_000_000
HOUR_MS = 3600 * 1000
POLICY = ChannelPolicy()  # reopen, 1000 messages, no age limit, 24 h CSAT window
FOLLOW_UP_POLICY = ChannelPolicy(solved_reply=SolvedReply.FOLLOW_UP)
SMALL = ChannelPolicy(max_thread_messages=3, max_thread_age_s=3600)


def ticket(
    status: Status = Status.OPEN,
    *,
    tid: str = "7",
    session: SessionState = SessionState.ACTIVE,
    count: int = 1,
    created: int = NOW - 1000,
) -> TicketView:
    return TicketView(tid, status, session, count, created)


SURVEY = Survey(ticket_id="7", message_id="SMsurvey", sent_at_ms=NOW - HOUR_MS)
OLD_SURVEY = Survey(ticket_id="7", message_id="SMsurvey", sent_at_ms=NOW - 25 * HOUR_MS)
SURVEY_NO_MSG_ID = Survey(ticket_id="7", message_id="", sent_at_ms=NOW - HOUR_MS)
NO_SIGNAL = RatingSignal()
BARE_5 = RatingSignal(rating=5)

# (id, seen, current, survey, signal, policy, expected decision)
ROWS: list[tuple[str, bool, TicketView | None, Survey | None, RatingSignal, ChannelPolicy,
                 Decision]] = [
    # Row 1: a provider retry does nothing, whatever else is true.
    ("duplicate", True, ticket(), None, NO_SIGNAL, POLICY,
     Decision(Action.DUPLICATE, None, None)),
    ("duplicate beats csat", True, ticket(Status.SOLVED), SURVEY,
     RatingSignal(5, "7"), POLICY, Decision(Action.DUPLICATE, None, None)),
    ("duplicate without ticket", True, None, None, NO_SIGNAL, POLICY,
     Decision(Action.DUPLICATE, None, None)),
    # Row 2: answers to the outstanding survey.
    ("csat via button payload", False, ticket(Status.SOLVED), SURVEY,
     RatingSignal(4, "7"), POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=4)),
    ("csat via payload, outside the window", False, ticket(Status.SOLVED), OLD_SURVEY,
     RatingSignal(2, "7"), POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=2)),
    ("csat via payload, ticket closed meanwhile", False, ticket(Status.CLOSED), SURVEY,
     RatingSignal(1, "7"), POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=1)),
    ("csat via payload, session ended", False,
     ticket(Status.OPEN, session=SessionState.ENDED), SURVEY,
     RatingSignal(3, "7"), POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=3)),
    ("csat via replied-to survey message", False, ticket(Status.SOLVED), SURVEY,
     RatingSignal(3, "", "SMsurvey"), POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=3)),
    ("csat via replied-to, outside the window", False, ticket(Status.SOLVED), OLD_SURVEY,
     RatingSignal(5, "", "SMsurvey"), POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=5)),
    ("csat via bare rating inside the window", False, ticket(Status.SOLVED), SURVEY,
     BARE_5, POLICY, Decision(Action.CSAT_ANSWER, "7", None, rating=5)),
    ("csat via bare rating, survey id unknown, reply to something", False,
     ticket(Status.SOLVED), SURVEY_NO_MSG_ID, RatingSignal(4, "", "SMother"), POLICY,
     Decision(Action.CSAT_ANSWER, "7", None, rating=4)),
    ("csat bare rating exactly at the window edge", False, ticket(Status.SOLVED),
     Survey("7", "SMsurvey", NOW - 24 * HOUR_MS), BARE_5, POLICY,
     Decision(Action.CSAT_ANSWER, "7", None, rating=5)),
    # ... and messages that look like answers but are not.
    ("bare rating outside the window reopens", False, ticket(Status.SOLVED), OLD_SURVEY,
     BARE_5, POLICY, Decision(Action.REOPEN, "7", Status.OPEN)),
    ("bare rating 1 ms past the window edge", False, ticket(Status.SOLVED),
     Survey("7", "SMsurvey", NOW - 24 * HOUR_MS - 1), BARE_5, POLICY,
     Decision(Action.REOPEN, "7", Status.OPEN)),
    ("payload for another ticket is not an answer", False, ticket(Status.OPEN), SURVEY,
     RatingSignal(5, "99"), POLICY, Decision(Action.APPEND, "7", Status.OPEN)),
    ("reply to another message is not an answer", False, ticket(Status.OPEN), SURVEY,
     RatingSignal(5, "", "SMother"), POLICY, Decision(Action.APPEND, "7", Status.OPEN)),
    ("rating without survey is a message", False, ticket(Status.OPEN), None,
     RatingSignal(5, "7"), POLICY, Decision(Action.APPEND, "7", Status.OPEN)),
    ("text that is no rating, survey outstanding", False, ticket(Status.SOLVED), SURVEY,
     RatingSignal(None, "", "SMsurvey"), POLICY, Decision(Action.REOPEN, "7", Status.OPEN)),
    # Row 3: no ticket.
    ("no ticket", False, None, None, NO_SIGNAL, POLICY, Decision(Action.NEW_TICKET, None,
                                                                 Status.NEW)),
    ("no ticket, stray rating", False, None, None, BARE_5, POLICY,
     Decision(Action.NEW_TICKET, None, Status.NEW)),
    # Row 4: the session was ended by an agent -> new ticket (no link), any status.
    *[
        (f"session ended, {s}", False, ticket(s, session=SessionState.ENDED), None,
         NO_SIGNAL, POLICY, Decision(Action.NEW_TICKET, None, Status.NEW))
        for s in Status
    ],
    ("session ended beats thread limit", False,
     ticket(Status.OPEN, session=SessionState.ENDED, count=50), None, NO_SIGNAL, SMALL,
     Decision(Action.NEW_TICKET, None, Status.NEW)),
    # Row 5: closed -> follow-up.
    ("closed", False, ticket(Status.CLOSED), None, NO_SIGNAL, POLICY,
     Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id="7")),
    ("closed, follow-up policy", False, ticket(Status.CLOSED), None, NO_SIGNAL,
     FOLLOW_UP_POLICY, Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id="7")),
    ("closed over the thread limit: no second close", False, ticket(Status.CLOSED, count=9),
     None, NO_SIGNAL, SMALL, Decision(Action.FOLLOW_UP, None, Status.NEW,
                                      previous_ticket_id="7")),
    # Row 6: solved -> reopen, or follow-up by policy.
    ("solved reopens", False, ticket(Status.SOLVED), None, NO_SIGNAL, POLICY,
     Decision(Action.REOPEN, "7", Status.OPEN)),
    ("solved, follow-up policy", False, ticket(Status.SOLVED), None, NO_SIGNAL,
     FOLLOW_UP_POLICY, Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id="7")),
    ("solved over the thread limit still reopens", False, ticket(Status.SOLVED, count=3),
     None, NO_SIGNAL, SMALL, Decision(Action.REOPEN, "7", Status.OPEN)),
    # Row 7: thread limit by count and by age.
    *[
        (f"thread limit by count, {s}", False, ticket(s, count=3), None, NO_SIGNAL, SMALL,
         Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id="7",
                  close_previous=CloseReason.THREAD_LIMIT))
        for s in (Status.NEW, Status.OPEN, Status.PENDING, Status.HOLD)
    ],
    *[
        (f"thread limit by age, {s}", False, ticket(s, count=1, created=NOW - HOUR_MS), None,
         NO_SIGNAL, SMALL,
         Decision(Action.FOLLOW_UP, None, Status.NEW, previous_ticket_id="7",
                  close_previous=CloseReason.THREAD_LIMIT))
        for s in (Status.NEW, Status.OPEN, Status.PENDING, Status.HOLD)
    ],
    ("one below the count limit", False, ticket(Status.OPEN, count=2), None, NO_SIGNAL,
     SMALL, Decision(Action.APPEND, "7", Status.OPEN)),
    ("1 ms younger than the age limit", False,
     ticket(Status.OPEN, created=NOW - HOUR_MS + 1), None, NO_SIGNAL, SMALL,
     Decision(Action.APPEND, "7", Status.OPEN)),
    ("age limit off by default", False, ticket(Status.OPEN, created=0), None, NO_SIGNAL,
     POLICY, Decision(Action.APPEND, "7", Status.OPEN)),
    # Row 8: pending -> open.
    ("pending becomes open", False, ticket(Status.PENDING), None, NO_SIGNAL, POLICY,
     Decision(Action.APPEND, "7", Status.OPEN)),
    # Row 9: new, open, hold unchanged.
    ("new stays new", False, ticket(Status.NEW), None, NO_SIGNAL, POLICY,
     Decision(Action.APPEND, "7", Status.NEW)),
    ("open stays open", False, ticket(Status.OPEN), None, NO_SIGNAL, POLICY,
     Decision(Action.APPEND, "7", Status.OPEN)),
    ("hold stays hold", False, ticket(Status.HOLD), None, NO_SIGNAL, POLICY,
     Decision(Action.APPEND, "7", Status.HOLD)),
    ("hold, rating outside the window", False, ticket(Status.HOLD), OLD_SURVEY, BARE_5,
     POLICY, Decision(Action.APPEND, "7", Status.HOLD)),
]


@pytest.mark.parametrize(
    ("seen", "current", "survey", "signal", "policy", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_route_table(
    seen: bool,
    current: TicketView | None,
    survey: Survey | None,
    signal: RatingSignal,
    policy: ChannelPolicy,
    expected: Decision,
) -> None:
    decision = route(seen=seen, current=current, survey=survey, signal=signal, policy=policy,
                     now_ms=NOW)
    assert decision == expected
    assert decision.opens_ticket == (expected.action in (Action.NEW_TICKET, Action.FOLLOW_UP))


def test_table_ids_are_unique() -> None:
    names = [row[0] for row in ROWS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("survey", "signal", "window_s", "expected"),
    [
        (None, BARE_5, 3600, None),
        (SURVEY, NO_SIGNAL, 10 * 3600, None),
        (SURVEY, BARE_5, 3600, 5),
        (SURVEY, BARE_5, 3599, None),
        (SURVEY, BARE_5, 0, None),
        (Survey("7", "", NOW), BARE_5, 0, 5),
        (SURVEY, RatingSignal(2, "7"), 0, 2),
        (SURVEY, RatingSignal(2, "8"), 10 * 3600, None),
        (SURVEY, RatingSignal(2, "", "SMsurvey"), 0, 2),
        (SURVEY, RatingSignal(2, "", "SMnope"), 10 * 3600, None),
    ],
)
def test_answers_survey(
    survey: Survey | None, signal: RatingSignal, window_s: int, expected: int | None
) -> None:
    assert answers_survey(survey, signal, now_ms=NOW, window_s=window_s) == expected


@pytest.mark.parametrize(
    ("count", "age_ms", "policy", "expected"),
    [
        (2, 0, SMALL, False),
        (3, 0, SMALL, True),
        (1, HOUR_MS - 1, SMALL, False),
        (1, HOUR_MS, SMALL, True),
        (999, 10**12, POLICY, False),
        (1000, 0, POLICY, True),
    ],
)
def test_thread_limit_reached(count: int, age_ms: int, policy: ChannelPolicy,
                              expected: bool) -> None:
    view = ticket(Status.OPEN, count=count, created=NOW - age_ms)
    assert thread_limit_reached(view, policy, now_ms=NOW) is expected


REOPENED_SURVEY = Survey(ticket_id="7", message_id="SMsurvey", sent_at_ms=None)


@pytest.mark.parametrize(("signal", "expected"), [
    (RatingSignal(rating=3), None),  # "ok" after the reopen: the conversation goes on
    (RatingSignal(rating=5, payload_ticket_id="7"), 5),  # its button still answers
    (RatingSignal(rating=4, replied_to_id="SMsurvey"), 4),  # so does a reply to it
])
def test_a_reopened_tickets_survey_takes_only_explicit_answers(
        signal: RatingSignal, expected: int | None) -> None:
    assert answers_survey(REOPENED_SURVEY, signal, now_ms=NOW, window_s=86400) == expected


@pytest.mark.parametrize(("decision", "expected"), [
    (Decision(Action.CSAT_ANSWER, "7", None, rating=5), None),
    (Decision(Action.REOPEN, "7", Status.OPEN), REOPENED_SURVEY),
    (Decision(Action.REOPEN, "8", Status.OPEN), SURVEY),  # another ticket's reopen
    (Decision(Action.APPEND, "7", Status.OPEN), SURVEY),
    (Decision(Action.NEW_TICKET, None, Status.NEW), SURVEY),
])
def test_survey_after(decision: Decision, expected: Survey | None) -> None:
    assert survey_after(decision, SURVEY) == expected
    assert survey_after(decision, None) is None


@pytest.mark.parametrize(("survey", "surveyed", "expected"), [
    # The survey was answered (none outstanding): tapping its button again re-rates it.
    (None, True, Decision(Action.CSAT_ANSWER, "7", None, rating=1)),
    # An older survey's button while another ticket's is outstanding: that older ticket.
    (Survey(ticket_id="9", message_id="SMother", sent_at_ms=NOW - HOUR_MS), True,
     Decision(Action.CSAT_ANSWER, "7", None, rating=1)),
    # A payload naming a ticket never surveyed (or not this contact's) is a message.
    (None, False, Decision(Action.REOPEN, "7", Status.OPEN)),
])
def test_a_survey_button_tapped_again_replaces_the_rating(
        survey: Survey | None, surveyed: bool, expected: Decision) -> None:
    signal = RatingSignal(rating=1, payload_ticket_id="7")
    decision = route(seen=False, current=ticket(Status.SOLVED), survey=survey, signal=signal,
                     policy=POLICY, now_ms=NOW, payload_ticket_surveyed=surveyed)
    assert decision == expected
    assert survey_after(decision, survey) == survey  # another ticket's survey stays
