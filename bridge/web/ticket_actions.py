"""What an agent does to a ticket, shared by the JSON API (bridge/web/api.py) and the
workspace pages (bridge/web/workspace/): one place for the rules of a reply, a note, an
update and the end of a session."""

from __future__ import annotations

import time

from aiohttp import web

from bridge.core.changes import Origin
from bridge.core.outbound import public_message_refusal, session_refusal
from bridge.core.tickets import Contact, Event, EventType, Status, Ticket, TransitionError
from bridge.sending import enqueue_send
from bridge.store.tickets import Conflict, Idempotency, NotFound, Replayed, TicketStore
from bridge.web.auth import Principal
from bridge.web.errors import ApiError, unprocessable
from bridge.web.keys import queues_key, settings_key, store_key

# Twilio's limit for one WhatsApp body.
MAX_REPLY_CHARS = 1600
MAX_NOTE_CHARS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


def checked_text(value: object, name: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise unprocessable(f"{name} must be a non-empty string")
    if len(value) > max_chars:
        raise unprocessable(f"{name} is longer than {max_chars} characters", "too_long")
    if "\x00" in value:
        raise unprocessable(f"{name} must not contain NUL characters")
    return value


async def contact_or_none(store: TicketStore, ticket: Ticket) -> Contact | None:
    try:
        return await store.get_contact(ticket.contact_id)
    except NotFound:
        return None


def public_reply_allowed(ticket: Ticket) -> None:
    """The store's guard, inside the reply's transaction: the session may have ended since."""
    if (refusal := session_refusal(ticket)) is not None:
        raise Conflict(refusal.code, refusal.message)


async def add_note(app: web.Application, who: Principal, ticket_id: str, body: str,
                   idempotency: Idempotency | None = None) -> str:
    """Record an internal note (allowed whatever the session state); its event id."""
    store = app[store_key]
    try:
        _, event_id = await store.update_ticket(
            ticket_id, author=who.name, now_ms=now_ms(),
            event=(EventType.NOTE, body, {}), idempotency=idempotency,
        )
    except Replayed as replay:  # the same request, running alongside: it recorded the note
        event_id = replay.event_id
    assert event_id
    return event_id


async def send_reply(app: web.Application, who: Principal, ticket: Ticket, body: str,
                     idempotency: Idempotency | None = None) -> str:
    """Record a public reply and queue its send; its event id. 409 outside the 24-hour
    window (a template, through a macro, is the way then) or once the session ended."""
    store = app[store_key]
    refusal = public_message_refusal(
        ticket, await contact_or_none(store, ticket), now_ms=now_ms(), has_template=False,
        template_hint="apply a macro that names one")
    if refusal is not None:
        raise ApiError(409, refusal.code, refusal.message)
    try:
        _, event_id = await store.update_ticket(
            ticket.id, author=who.name, now_ms=now_ms(),
            event=(EventType.AGENT_REPLY, body, {"kind": "reply"}),
            guard=public_reply_allowed, idempotency=idempotency,
        )
    except Replayed as replay:  # recorded (and enqueued) by the same request, alongside
        return replay.event_id
    assert event_id is not None
    await enqueue_send(app[queues_key], ticket.id, event_id)
    return event_id


def check_assignee(app: web.Application, assignee: str | None) -> None:
    if assignee is not None and (not isinstance(assignee, str) or len(assignee) > 100):
        raise unprocessable("assignee must be a string of at most 100 characters (or null)")
    if assignee and assignee not in app[settings_key].agent_tokens:
        # Lists are filtered by assignee: a name no one logs in as would hide the ticket.
        raise unprocessable("assignee must name an agent of BRIDGE_AGENT_TOKENS (or be null)",
                            "unknown_agent")


async def update_ticket(app: web.Application, who: Principal, ticket_id: str, *,
                        status: Status | None = None, assignee: str | None = None,
                        tags: list[str] | None = None) -> Ticket:
    """Change status, assignee ("" unassigns) and tags as an agent."""
    check_assignee(app, assignee)
    try:
        ticket, _ = await app[store_key].update_ticket(
            ticket_id, author=who.name, now_ms=now_ms(),
            status=status, assignee=assignee, tags=tags, origin=Origin.AGENT,
        )
    except TransitionError as exc:
        raise unprocessable(exc.message, exc.code) from None
    return ticket


async def end_session(app: web.Application, who: Principal, ticket_id: str,
                      reason: str = "agent") -> Ticket:
    ticket, _ = await app[store_key].update_ticket(
        ticket_id, author=who.name, now_ms=now_ms(),
        end_session_reason=reason, origin=Origin.AGENT,
    )
    return ticket


async def recorded_event(app: web.Application, ticket_id: str, event_id: str) -> Event:
    return await app[store_key].get_event(ticket_id, event_id)
