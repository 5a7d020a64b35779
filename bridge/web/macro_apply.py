"""Applying a macro to a ticket, as the agent who asks (`POST /api/v1/tickets/{id}/macros/
{name}`, a reply naming a macro, the ticket page's Apply): the agent's permissions, the
macro's assignee checked like the PATCH it amounts to, then bridge.sending.apply_macro.
Editing macros is bridge/web/macros.py's."""

from __future__ import annotations

from aiohttp import web

from bridge.core.macros import SELF_ASSIGNEE, MacroError, check_name
from bridge.core.teams import Access, Permission
from bridge.sending import apply_macro as apply_macro_to_ticket
from bridge.store.macros import MacroNotFound
from bridge.store.tickets import Conflict, Idempotency, NotFound, Replayed
from bridge.templating import TemplateErrors
from bridge.web.access import check_assignment, need, status_check
from bridge.web.auth import require
from bridge.web.errors import conflict_error, not_found
from bridge.web.idempotency import idempotency_of, replayed
from bridge.web.keys import queues_key, store_key
from bridge.web.macros import (
    automation_config,
    invalid_template,
    macro_store,
    now_ms,
    render_limits,
)
from bridge.web.rendering import render_gate_key
from bridge.web.serialize import event_json


async def apply_macro(request: web.Request, ticket_id: str, name: str,
                      idempotency: Idempotency | None = None) -> web.Response:
    """Apply a macro to a ticket as the requesting agent: 202 with the recorded event.

    Also used by `POST /api/v1/tickets/{id}/replies {"macro": name}`."""
    who = require(request, Permission.TICKETS_WORK)
    try:
        check_name(name)
    except MacroError:
        raise not_found(f"macro {name!r} not found") from None
    app = request.app
    queues = app[queues_key]
    store = app[store_key]
    try:
        ticket = await store.get_ticket(ticket_id)
        need(who, ticket, Access.WORK)
        earlier = await replayed(store, ticket_id, idempotency)
    except NotFound:
        raise not_found(f"ticket {ticket_id} not found") from None
    if earlier is not None:
        return web.json_response(event_json(earlier), status=202)
    try:
        macro = await macro_store(app).get(name)
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    if macro.actions.assignee is not None:
        # The agent's role and groups decide as for a PATCH: a macro is no way around them.
        assignee = who.name if macro.actions.assignee == SELF_ASSIGNEE else macro.actions.assignee
        await check_assignment(app, who, ticket, group=None, assignee=assignee)
    try:
        outcome = await apply_macro_to_ticket(
            store=store, macros=macro_store(app), queues=queues,
            general=automation_config(app).general, ticket_id=ticket_id, name=name,
            author=who.name, agent_name=who.name, now_ms=now_ms(), idempotency=idempotency,
            limits=render_limits(request), run=app[render_gate_key].runner(),
            status_check=await status_check(app), macro=macro,
        )
    except NotFound:
        raise not_found(f"ticket {ticket_id} not found") from None
    except Conflict as exc:
        raise conflict_error(exc) from None
    except Replayed as replay:  # applied by the same request, running alongside
        event = await store.get_event(ticket_id, replay.event_id)
        return web.json_response(event_json(event), status=202)
    except TemplateErrors as exc:
        return invalid_template(exc.problems)
    assert outcome.event_id is not None  # apply always records an event
    event = await store.get_event(ticket_id, outcome.event_id)
    return web.json_response(event_json(event), status=202)


async def apply_macro_handler(request: web.Request) -> web.Response:
    return await apply_macro(request, request.match_info["id"], request.match_info["name"],
                             idempotency_of(request, {}))


routes: list[web.RouteDef] = [
    web.post("/api/v1/tickets/{id}/macros/{name}", apply_macro_handler),
]
