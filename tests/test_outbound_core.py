"""bridge.core.outbound: may a public message go out now (one table for replies, macros
and surveys)."""

from __future__ import annotations

import pytest

from bridge.core.outbound import public_message_refusal
from bridge.core.tickets import Contact, SessionState, Status, Ticket

NOW = 1_800_000_000_000
OPEN_WINDOW = NOW + 3_600_000
CLOSED_WINDOW = NOW - 1


def ticket(status: Status = Status.OPEN, session: SessionState = SessionState.ACTIVE,
           channel: str = "whatsapp") -> Ticket:
    return Ticket(id="1", contact_id="c", channel=channel, status=status, created_at_ms=0,
                  updated_at_ms=0, session=session)


def contact(window_until_ms: int = OPEN_WINDOW, opted_out: bool = False,
            channel: str = "whatsapp") -> Contact:
    return Contact(id="c", channel=channel, address="whatsapp:+33600000000",
                   window_until_ms=window_until_ms, opted_out=opted_out)


@pytest.mark.parametrize(("t", "c", "has_template", "survey", "expected"), [
    (ticket(), contact(), False, False, None),
    (ticket(Status.PENDING), contact(), False, False, None),
    (ticket(Status.SOLVED), contact(), False, False, None),
    (ticket(Status.CLOSED), contact(), False, False, "ticket_closed"),
    (ticket(Status.CLOSED), contact(), True, True, "ticket_closed"),
    (ticket(session=SessionState.ENDED), contact(), False, False, "session_ended"),
    # The survey follows the agent's end of the session.
    (ticket(session=SessionState.ENDED), contact(), False, True, None),
    (ticket(), contact(opted_out=True), True, False, "opted_out"),
    (ticket(), contact(CLOSED_WINDOW), False, False, "outside_window"),
    (ticket(), contact(CLOSED_WINDOW), True, False, None),  # the approved template goes
    (ticket(), contact(CLOSED_WINDOW), False, True, "outside_window"),
    # The widget has no 24-hour window.
    (ticket(channel="widget"), contact(CLOSED_WINDOW, channel="widget"), False, False, None),
    # Without a contact record only the ticket decides.
    (ticket(), None, False, False, None),
    (ticket(Status.CLOSED), None, False, False, "ticket_closed"),
])
def test_public_message_refusal(t: Ticket, c: Contact | None, has_template: bool,
                                survey: bool, expected: str | None) -> None:
    refusal = public_message_refusal(t, c, now_ms=NOW, has_template=has_template,
                                     survey=survey)
    assert (refusal.code if refusal else None) == expected


def test_the_hint_ends_the_outside_window_message() -> None:
    refusal = public_message_refusal(ticket(), contact(CLOSED_WINDOW), now_ms=NOW,
                                     has_template=False, template_hint="apply a macro")
    assert refusal is not None and refusal.message.endswith("; apply a macro")
