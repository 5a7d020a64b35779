"""Redis key names. Every key of one contact shares the hash tag {c:<contact-id>} so the
routing transaction stays in one Redis Cluster slot; global indexes live outside it."""

from __future__ import annotations

PREFIX = "bridge"


def contact_prefix(contact_id: str) -> str:
    return f"{{c:{contact_id}}}"


# SCAN MATCH pattern of every contact hash (`bridge migrate contact-ids`).
CONTACTS_GLOB = "{c:*}:contact"


def contact(contact_id: str) -> str:
    return f"{contact_prefix(contact_id)}:contact"


def seen(contact_id: str) -> str:
    return f"{contact_prefix(contact_id)}:seen"


def ticket(contact_id: str, ticket_id: str) -> str:
    return f"{contact_prefix(contact_id)}:t:{ticket_id}"


def events(contact_id: str, ticket_id: str) -> str:
    return f"{ticket(contact_id, ticket_id)}:events"


def deliveries(contact_id: str, ticket_id: str) -> str:
    """Hash: outbound event id -> JSON delivery state (mutable, unlike the stream)."""
    return f"{ticket(contact_id, ticket_id)}:delivery"


def idempotency(contact_id: str, ticket_id: str, key_id: str) -> str:
    """String: what a client's Idempotency-Key did on this ticket ("pending <op> <fp>" while
    its update runs, then "done <event id> <fp>"), kept a day."""
    return f"{ticket(contact_id, ticket_id)}:idem:{key_id}"


# Global keys (not in a contact's slot).
TICKET_SEQ = f"{PREFIX}:seq:ticket"
TICKET_CONTACT = f"{PREFIX}:ticket:contact"  # hash ticket id -> contact id
# Zset contact id -> ms of its latest ticket opening, written with the id allocation (intent
# first): if the process dies between the routing script and the index update, the ticket
# would be unlisted and unknown by id; the sweep (workers/sweeper.py) lists it.
OPENING = f"{PREFIX}:idx:opening"


# Zset ticket id -> ms: tickets that may hold an outbound event no worker has picked up yet
# (the oldest such moment). Written before the event (intent first), cleared by the sweep
# (workers/sweeper.py) once every outbound event of the ticket has a delivery state.
UNSENT = f"{PREFIX}:idx:unsent"
# Hash ticket id -> ms of its latest mark: the sweep leaves marks younger than its grace.
UNSENT_MARKS = f"{PREFIX}:unsent:marks"


def provider_message(provider_id: str) -> str:
    """Outbound provider id (Twilio SM…) -> "contact ticket event" for status callbacks."""
    return f"{PREFIX}:out:{provider_id}"


def early_status(provider_id: str) -> str:
    """List: status callbacks that arrived before a worker recorded this provider id."""
    return f"{PREFIX}:out-early:{provider_id}"


def index(kind: str, value: str = "") -> str:
    """Ticket list indexes: zsets of ticket ids scored by the numeric id (creation order)."""
    return f"{PREFIX}:idx:{kind}:{value}" if value else f"{PREFIX}:idx:{kind}"
