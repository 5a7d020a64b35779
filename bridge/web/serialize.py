"""JSON shapes of the agent API (DESIGN §6): tickets and events.

Pure functions of the domain values; every handler that answers a ticket or an event uses
these, so the shapes stay the same across calls. Times are ISO 8601 UTC with milliseconds
(`2024-05-01T12:00:00.000Z`); an unset time (0 ms) is `null`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy
from bridge.core.tickets import Contact, Event, Ticket, aging
from config.settings import Settings


def iso(ms: int) -> str | None:
    """Milliseconds since the epoch -> ISO 8601 UTC, or None for 0 (unset)."""
    if not ms:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _policy(settings: Settings, channel: str) -> ChannelPolicy:
    try:
        return settings.policy(Channel(channel))
    except ValueError:
        return ChannelPolicy()


def ticket_json(
    ticket: Ticket,
    contact: Contact | None,
    *,
    settings: Settings,
    now_ms: int,
) -> dict[str, Any]:
    """A ticket as the API shows it. `contact` may be None when it could not be read (the
    contact fields are then null apart from its id)."""
    policy = _policy(settings, ticket.channel)
    age_s = ticket.age_s(now_ms)
    return {
        "id": ticket.id,
        "status": ticket.status.value,
        "channel": ticket.channel,
        "contact": {
            "id": ticket.contact_id,
            "address": contact.address if contact else None,
            "name": (contact.name or None) if contact else None,
        },
        "assignee": ticket.assignee or None,
        "group": ticket.group or None,
        "tags": list(ticket.tags),
        "fields": dict(ticket.field_values),
        "created_at": iso(ticket.created_at_ms),
        "updated_at": iso(ticket.updated_at_ms),
        "solved_at": iso(ticket.solved_at_ms),
        "closed_at": iso(ticket.closed_at_ms),
        "closed_reason": ticket.closed_reason or None,
        "session": {
            "state": ticket.session.value,
            "ended_reason": ticket.session_ended_reason or None,
        },
        "message_count": ticket.message_count,
        "follow_up_of": ticket.follow_up_of or None,
        "follow_ups": list(ticket.follow_ups),
        "age_s": int(age_s),
        "aging": aging(
            ticket.status,
            age_s,
            yellow_after_s=policy.aging_yellow_after_s,
            red_after_s=policy.aging_red_after_s,
        ).value,
        "csat": {
            "rating": ticket.csat_rating or None,
            "sent_at": iso(ticket.csat_sent_at_ms),
        },
        "version": ticket.version,
    }


def event_json(event: Event) -> dict[str, Any]:
    """A thread event; outbound events carry their delivery state, others `null`."""
    return {
        "id": event.id,
        "ticket_id": event.ticket_id,
        "type": event.type.value,
        "at": iso(event.at_ms),
        "author": event.author,
        "body": event.body,
        "data": event.data,
        "delivery": event.delivery.value if event.delivery else None,
        "error_code": event.error_code or None,
        "error_message": event.error_message or None,
    }
