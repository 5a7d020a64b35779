"""The agent API under /api/v1: tickets, threads, notes, replies, status, sessions."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from aiohttp import web

from bridge.core.messages import Channel, contact_id_for
from bridge.core.teams import Access, Permission
from bridge.core.tickets import (
    Contact,
    Status,
    Ticket,
)
from bridge.store.tickets import MAX_PAGE, NotFound, TicketStore
from bridge.web import ticket_actions
from bridge.web.access import need, visible_to
from bridge.web.auth import require
from bridge.web.bodies import json_object
from bridge.web.errors import bad_request, unprocessable
from bridge.web.idempotency import idempotency_of, replayed
from bridge.web.keys import settings_key, store_key
from bridge.web.macro_apply import apply_macro
from bridge.web.serialize import event_json, ticket_json
from bridge.web.ticket_actions import MAX_NOTE_CHARS, MAX_REPLY_CHARS

log = logging.getLogger("bridge.api")
routes = web.RouteTableDef()


def now_ms() -> int:
    return int(time.time() * 1000)


def _text(data: dict[str, Any], name: str, max_chars: int) -> str:
    return ticket_actions.checked_text(data.get(name), name, max_chars)


# ASCII digits only: str.isdigit() is also true for '²', which int() refuses.
_NUMBER = re.compile(r"[0-9]{1,18}")
_CHANNELS = frozenset(Channel)
# A stream id as the store hands it out (ms-seq), each part below 2**64.
_REASON = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def event_cursor(raw: str) -> str:
    """A next_cursor from a previous page: an id Redis can step back from."""
    match = _STREAM_ID.fullmatch(raw)
    if not match or not all(int(part) < 2**64 for part in match.groups()) or raw == "0-0":
        raise unprocessable("cursor must be the next_cursor of a previous page")
    return raw


# The id format belongs to contact_id_for; what matters here is that it cannot be mistaken for
# a phone number (at most 15 digits, E.164) typed without its +.
_CONTACT_ID = re.compile(r"[0-9A-Za-z_-]{16,128}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# A WhatsApp business-scoped user id, which Twilio may send instead of the number.
_BSUID = re.compile(r"[A-Z]{2}\.[0-9A-Za-z]{1,128}")
_NUMBER_SEPARATORS = str.maketrans("", "", " -.()")
_CONTACT_HELP = ("contact must be a contact id (a ticket's contact.id) or a WhatsApp address: "
                 "whatsapp:+33612345678, or the number alone, +33612345678 (encode + as %2B)")


def _contact_id(raw: str, key: bytes) -> str:
    """The `contact` filter: a contact id as is, or a customer's WhatsApp address (a bare
    number means WhatsApp) turned into its id the way routing does, so agents can search by
    phone number."""
    if not raw:
        return ""
    address = raw.removeprefix("whatsapp:")
    if address == raw and not raw.startswith(("+", " ")):
        if not _CONTACT_ID.fullmatch(raw):
            raise bad_request(_CONTACT_HELP, "invalid_contact")
        return raw
    if _BSUID.fullmatch(address):
        return contact_id_for(key, Channel.WHATSAPP, f"whatsapp:{address}")
    # An unencoded + in a query string arrives as a space; agents paste "+33 6 12 34 56 78".
    if address.startswith(" "):
        address = "+" + address[1:]
    number = address.translate(_NUMBER_SEPARATORS)
    if not _E164.fullmatch(number):
        raise bad_request(f"{_CONTACT_HELP}; {raw[:40]!r} is not a phone number with its "
                          "country code", "invalid_contact")
    return contact_id_for(key, Channel.WHATSAPP, f"whatsapp:{number}")


def _limit(request: web.Request, default: int = 50) -> int:
    raw = request.query.get("limit", str(default))
    if not _NUMBER.fullmatch(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise unprocessable(f"limit must be a number from 1 to {MAX_PAGE}")
    return int(raw)


async def _ticket(store: TicketStore, ticket_id: str) -> Ticket:
    return await store.get_ticket(ticket_id)  # NotFound: 404 (bridge.web.middlewares)


async def ticket_response(request: web.Request, ticket: Ticket, status: int = 200) -> web.Response:
    return web.json_response(await ticket_body(request, ticket), status=status)


async def _contact_or_none(store: TicketStore, ticket: Ticket) -> Contact | None:
    try:
        return await store.get_contact(ticket.contact_id)
    except NotFound:
        return None


async def ticket_body(request: web.Request, ticket: Ticket) -> dict[str, Any]:
    contact = await _contact_or_none(request.app[store_key], ticket)
    return ticket_json(ticket, contact, settings=request.app[settings_key], now_ms=now_ms())


@routes.get("/api/v1/tickets")
async def list_tickets(request: web.Request) -> web.Response:
    who = require(request, Permission.TICKETS_READ)
    q = request.query
    status = None
    if q.get("status"):
        try:
            status = Status(q["status"])
        except ValueError:
            raise unprocessable(f"status must be one of {', '.join(Status)}") from None
    channel = q.get("channel", "")
    if channel and channel not in _CHANNELS:
        raise unprocessable(f"channel must be one of {', '.join(Channel)}")
    cursor = None
    if q.get("cursor"):
        if not _NUMBER.fullmatch(q["cursor"]):
            raise unprocessable("cursor must be the next_cursor of a previous page")
        cursor = int(q["cursor"])
    tickets, next_cursor = await request.app[store_key].list_tickets(
        status=status,
        channel=channel,
        assignee=q.get("assignee", ""),
        contact_id=_contact_id(q.get("contact", ""),
                               request.app[settings_key].contact_key_bytes),
        cursor=cursor,
        limit=_limit(request),
        keep=visible_to(who),
    )
    bodies = [await ticket_body(request, t) for t in tickets]
    return web.json_response(
        {"tickets": bodies, "next_cursor": str(next_cursor) if next_cursor else None}
    )


@routes.get("/api/v1/tickets/{id}")
async def get_ticket(request: web.Request) -> web.Response:
    who = require(request, Permission.TICKETS_READ)
    ticket = await _ticket(request.app[store_key], request.match_info["id"])
    need(who, ticket, Access.READ)
    return await ticket_response(request, ticket)


@routes.get("/api/v1/tickets/{id}/events")
async def list_events(request: web.Request) -> web.Response:
    store = request.app[store_key]
    ticket_id = request.match_info["id"]
    need(require(request, Permission.TICKETS_READ), await _ticket(store, ticket_id),
         Access.READ)
    raw_cursor = request.query.get("cursor")
    cursor = event_cursor(raw_cursor) if raw_cursor else None
    events, next_cursor = await store.events(ticket_id, cursor=cursor, limit=_limit(request))
    return web.json_response(
        {"events": [event_json(e) for e in events], "next_cursor": next_cursor}
    )


@routes.patch("/api/v1/tickets/{id}")
async def patch_ticket(request: web.Request) -> web.Response:
    ticket_id = request.match_info["id"]
    who = require(request, Permission.TICKETS_READ)
    data = await json_object(request, frozenset({"status", "assignee", "tags", "group",
                                                 "fields"}))
    if not data:  # the document's TicketPatch has minProperties 1
        raise unprocessable("nothing to change: send status, assignee, tags, group or "
                            "fields")
    status = None
    if "status" in data:
        try:
            status = Status(data["status"])
        except ValueError:
            raise unprocessable(f"status must be one of {', '.join(Status)}") from None
    assignee = data.get("assignee")
    if assignee is not None and (not isinstance(assignee, str) or len(assignee) > 100):
        raise unprocessable("assignee must be a string of at most 100 characters (or null)")
    if assignee == "":
        # null unassigns; an empty name is no agent (lists are filtered by assignee).
        raise unprocessable("assignee must name an agent (or be null)", "unknown_agent")
    if "assignee" in data and assignee is None:
        assignee = ""
    group = data.get("group")
    if group is not None and (not isinstance(group, str) or not 1 <= len(group) <= 64):
        raise unprocessable("group must be a group name (or null)")
    if "group" in data and group is None:
        group = ""
    tags = data.get("tags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        raise unprocessable("tags must be a list of strings")
    ticket = await ticket_actions.update_ticket(
        request.app, who, ticket_id, status=status, assignee=assignee, tags=tags, group=group,
        fields=data.get("fields"))
    return await ticket_response(request, ticket)


@routes.post("/api/v1/tickets/{id}/notes")
async def add_note(request: web.Request) -> web.Response:
    """Internal notes are allowed whatever the session state, even on closed tickets."""
    store = request.app[store_key]
    ticket_id = request.match_info["id"]
    who = require(request, Permission.TICKETS_NOTE)
    data = await json_object(request, frozenset({"body"}))
    body = _text(data, "body", MAX_NOTE_CHARS)
    idempotency = idempotency_of(request, data)
    need(who, await _ticket(store, ticket_id), Access.READ)
    if (earlier := await replayed(store, ticket_id, idempotency)) is not None:
        return web.json_response(event_json(earlier), status=201)
    event_id = await ticket_actions.add_note(request.app, who, ticket_id, body, idempotency)
    return web.json_response(event_json(await store.get_event(ticket_id, event_id)),
                             status=201)


@routes.post("/api/v1/tickets/{id}/replies")
async def reply(request: web.Request) -> web.Response:
    store = request.app[store_key]
    ticket_id = request.match_info["id"]
    who = require(request, Permission.TICKETS_WORK)
    data = await json_object(request, frozenset({"body", "macro"}))
    idempotency = idempotency_of(request, data)
    need(who, await _ticket(store, ticket_id), Access.WORK)
    if "macro" in data:
        if "body" in data:
            raise unprocessable("send either body or macro, not both")
        if not isinstance(data["macro"], str) or not data["macro"]:
            raise unprocessable("macro must be a macro name")
        return await apply_macro(request, ticket_id, data["macro"], idempotency)
    body = _text(data, "body", MAX_REPLY_CHARS)
    ticket = await _ticket(store, ticket_id)
    if (earlier := await replayed(store, ticket_id, idempotency)) is not None:
        return web.json_response(event_json(earlier), status=202)
    event_id = await ticket_actions.send_reply(request.app, who, ticket, body, idempotency)
    event = await store.get_event(ticket_id, event_id)
    return web.json_response(event_json(event), status=202)


@routes.post("/api/v1/tickets/{id}/session/end")
async def end_session(request: web.Request) -> web.Response:
    ticket_id = request.match_info["id"]
    who = require(request, Permission.TICKETS_WORK)
    reason = "agent"
    if request.can_read_body:
        data = await json_object(request, frozenset({"reason"}))
        if "reason" in data:
            reason = data["reason"]
            if not isinstance(reason, str) or not _REASON.fullmatch(reason):
                raise unprocessable("reason must be 1-64 letters, digits, _ or -")
    ticket = await ticket_actions.end_session(request.app, who, ticket_id, reason)
    return await ticket_response(request, ticket)
