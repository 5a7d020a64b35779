"""May a public message go out on a ticket now? One answer for the API's replies, macros
and surveys (bridge.sending), so the three cannot disagree.

A refused message is refused before anything is recorded or sent, with a code the API
answers as 409.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.tickets import Contact, SessionState, Status, Ticket

# The channels with a customer-service window (free-form messages only within 24 hours of
# the customer's last message; approved templates at any time).
WINDOWED_CHANNELS = frozenset({"whatsapp"})


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


TICKET_CLOSED = Refusal("ticket_closed", "the ticket is closed: nothing more goes out on it")
SESSION_ENDED = Refusal(
    "session_ended",
    "the messaging session was ended: nothing more goes out on it (add an internal note "
    "instead); the customer's next message opens a new ticket")
OPTED_OUT = Refusal("opted_out", "the customer opted out of messages")


def session_refusal(ticket: Ticket) -> Refusal | None:
    """What the ticket alone says (checked again inside the store's transaction)."""
    if ticket.status is Status.CLOSED:
        return TICKET_CLOSED
    if ticket.session is SessionState.ENDED:
        return SESSION_ENDED
    return None


def public_message_refusal(ticket: Ticket, contact: Contact | None, *, now_ms: int,
                           has_template: bool, template_hint: str = "",
                           survey: bool = False) -> Refusal | None:
    """None when a public message may go out now; otherwise why not. `has_template`: the
    message names an approved template to send outside the window; `template_hint` ends
    the outside-window message (what the agent can do instead). `survey`: the CSAT
    survey, which goes out when the agent ends the session (DESIGN §3), so an ended
    session does not stop it; a closed ticket still does."""
    refusal = session_refusal(ticket)
    if survey and refusal is SESSION_ENDED:
        refusal = None
    if refusal is not None or contact is None:
        return refusal
    if contact.opted_out:
        return OPTED_OUT
    if (ticket.channel in WINDOWED_CHANNELS and not contact.window_open(now_ms)
            and not has_template):
        return Refusal(
            "outside_window",
            "the customer's last message is more than 24 hours old: WhatsApp only allows "
            "an approved template now" + (f"; {template_hint}" if template_hint else ""))
    return None
