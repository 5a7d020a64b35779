"""One ticket: its thread (paged, newest last, delivery ticks, Twilio's failure reasons),
reply (inside the 24-hour window), internal note, macros with a preview, status, assignee,
tags, group and ticket fields, the end of the session, follow-up links and the customer's
other tickets.

The actions reuse the API's rules (bridge/web/ticket_actions.py, bridge/web/macros.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from bridge.core.outbound import session_refusal
from bridge.core.teams import Access
from bridge.core.tickets import OUTBOUND_EVENTS, Event, Status
from bridge.sending import render_macro
from bridge.store.macros import MacroNotFound
from bridge.store.tickets import TicketStore
from bridge.templating import TemplateErrors
from bridge.web import ticket_actions
from bridge.web.access import field_definitions, need, visible_to
from bridge.web.api import event_cursor
from bridge.web.auth import Principal
from bridge.web.bodies import read_form
from bridge.web.errors import ApiError
from bridge.web.keys import settings_key, store_key
from bridge.web.macro_apply import apply_macro
from bridge.web.macros import automation_config, macro_store, render_limits
from bridge.web.rendering import render_gate_key
from bridge.web.serialize import event_json, iso, ticket_json
from bridge.web.workspace import teams_page, ticket_offers, update_form
from bridge.web.workspace.common import form_text, page, redirect, render, render_fragment

routes = web.RouteTableDef()

THREAD_PAGE = 30


def _back(request: web.Request) -> str:
    return f"/app/tickets/{request.match_info['id']}"


async def thread(request: web.Request, ticket_id: str) -> dict[str, Any]:
    """A page of the thread, oldest first on screen; `before` pages back. It is checked as
    the API checks its cursor: an id Redis cannot step back from (0-0, a part past 64 bits)
    would be its error, a 500."""
    raw = request.query.get("before") or None
    before = None if raw is None else event_cursor(raw)
    store = request.app[store_key]
    events, older = await store.events(ticket_id, cursor=before, limit=THREAD_PAGE)
    shown = [event_json(e) | {"outbound": e.type in OUTBOUND_EVENTS} for e in events]
    return {"events": shown[::-1], "older": older, "before": before or "",
            "newer": await _newer(store, ticket_id, events) if before else None}


async def _newer(store: TicketStore, ticket_id: str, events: list[Event]) -> str:
    """The `before` of the page after an older one: the id just past the next
    THREAD_PAGE events ("" when those reach the newest, the page without `before`)."""
    if not events:
        return ""
    after = await store.events_after(ticket_id, events[0].id, limit=THREAD_PAGE + 1)
    return after[THREAD_PAGE].id if len(after) > THREAD_PAGE else ""


async def ticket_context(request: web.Request, who: Principal) -> dict[str, Any]:
    app = request.app
    store = app[store_key]
    ticket = await store.get_ticket(request.match_info["id"])
    need(who, ticket, Access.READ)
    contact = await ticket_actions.contact_or_none(store, ticket)
    now_ms = int(time.time() * 1000)
    others, _ = await store.list_tickets(contact_id=ticket.contact_id, limit=20,
                                         keep=visible_to(who))
    macros = await macro_store(app).all()
    window_open = contact is not None and contact.window_open(now_ms)
    # A closed ticket or an ended session takes no reply at all (the store would refuse it):
    # the page says why instead of offering a form.
    stopped = session_refusal(ticket)
    return {
        # Only the forms the viewer can use on this ticket in its state (the posts are
        # checked as before).
        "offers": ticket_offers.offers(who, ticket),
        "ticket": ticket_json(ticket, contact, settings=app[settings_key], now_ms=now_ms),
        "thread": await thread(request, ticket.id),
        "reply_refusal": stopped.message if stopped else "",
        "window_open": window_open,
        "window_until": iso(contact.window_until_ms) if contact else None,
        "macros": [m for m in macros if not m.sends or (
            stopped is None and (window_open or m.actions.fallback_content_sid))],
        "all_macros": macros,
        "others": [{"id": t.id, "status": t.status.value, "created_at": iso(t.created_at_ms)}
                   for t in others if t.id != ticket.id],
        "statuses": [s.value for s in Status if s is not Status.NEW or ticket.status is s],
        "shown": update_form.shown_json(ticket),
        **await teams_page.ticket_extras(request, who, ticket),
    }


@routes.get("/app/tickets/{id}")
@page()
async def ticket_page(request: web.Request, who: Principal) -> web.Response:
    return render(request, "ticket.html", who=who, **await ticket_context(request, who))


@routes.get("/app/tickets/{id}/thread")
@page()
async def thread_fragment(request: web.Request, who: Principal) -> web.Response:
    """The thread alone (the live refresh swaps it in)."""
    ticket_id = request.match_info["id"]
    need(who, await request.app[store_key].get_ticket(ticket_id), Access.READ)
    return render_fragment(request, "_thread.html", who=who, ticket={"id": ticket_id},
                           thread=await thread(request, ticket_id))


@routes.post("/app/tickets/{id}/reply")
@page(back=_back)
async def reply(request: web.Request, who: Principal) -> web.Response:
    body = ticket_actions.checked_text(await form_text(request, "body"), "body",
                                       ticket_actions.MAX_REPLY_CHARS)
    ticket = await request.app[store_key].get_ticket(request.match_info["id"])
    await ticket_actions.send_reply(request.app, who, ticket, body)
    return redirect(request, _back(request), notice="Reply queued")


@routes.post("/app/tickets/{id}/note")
@page(back=_back)
async def note(request: web.Request, who: Principal) -> web.Response:
    body = ticket_actions.checked_text(await form_text(request, "body"), "note",
                                       ticket_actions.MAX_NOTE_CHARS)
    ticket = await request.app[store_key].get_ticket(request.match_info["id"])
    await ticket_actions.add_note(request.app, who, ticket.id, body)
    return redirect(request, _back(request), notice="Note added")


@routes.post("/app/tickets/{id}/macro")
@page(back=_back)
async def apply(request: web.Request, who: Principal) -> web.Response:
    name = await form_text(request, "macro")
    answer = await apply_macro(request, request.match_info["id"], name)
    if answer.status >= 400:
        assert isinstance(answer, web.Response) and answer.text is not None
        raise ApiError(answer.status, "macro", json.loads(answer.text)["error"]["message"])
    return redirect(request, _back(request), notice=f"Macro {name} applied")


@routes.get("/app/tickets/{id}/macro-preview")
@page()
async def macro_preview(request: web.Request, who: Principal) -> web.Response:
    """The macro rendered for this ticket (a fragment under the macro's select)."""
    app = request.app
    store = app[store_key]
    ticket = await store.get_ticket(request.match_info["id"])
    need(who, ticket, Access.READ)  # the preview shows the ticket's fields and contact
    contact = await ticket_actions.contact_or_none(store, ticket)
    try:
        macro = await macro_store(app).get(request.query.get("macro", ""))
    except MacroNotFound as exc:
        return render_fragment(request, "_preview.html", who=who, body="", problems=[str(exc)])
    try:
        rendered = await render_macro(
            macro, ticket=ticket, contact=contact, general=automation_config(app).general,
            agent_name=who.name, locale=None, limits=render_limits(request),
            run=app[render_gate_key].runner(who.name))
    except TemplateErrors as exc:
        return render_fragment(request, "_preview.html", who=who, body="",
                               problems=[p.describe() for p in exc.problems])
    return render_fragment(request, "_preview.html", who=who, body=rendered.body, problems=[])


@routes.post("/app/tickets/{id}/update")
@page(back=_back)
async def update(request: web.Request, who: Principal) -> web.Response:
    form = await read_form(request)
    ticket = await request.app[store_key].get_ticket(request.match_info["id"])
    asked = update_form.changes(form, ticket, await field_definitions(request.app))
    if asked.empty:
        return redirect(request, _back(request), notice="No change")
    await ticket_actions.update_ticket(request.app, who, ticket.id, status=asked.status,
                                       assignee=asked.assignee, tags=asked.tags,
                                       group=asked.group, fields=asked.fields)
    return redirect(request, _back(request), notice="Ticket updated")


@routes.post("/app/tickets/{id}/end-session")
@page(back=_back)
async def end_session(request: web.Request, who: Principal) -> web.Response:
    await ticket_actions.end_session(request.app, who, request.match_info["id"])
    return redirect(request, _back(request), notice="Session ended")
