"""Teams in the workspace: a ticket's group and field values on its page (typed inputs,
read from the update form), saved views on the tickets page (each with its count, a page
of one with the cursor), and the "available for assignment" toggle in the header.

Every rule stays where the API has it: fields and groups are checked by
bridge/web/ticket_actions.py, views are counted and paged by bridge/web/views.py, the
availability is set by bridge/web/teams.py."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from bridge.core.teams import Permission, allowed
from bridge.core.ticket_fields import FieldDef, FieldType
from bridge.core.tickets import Ticket
from bridge.web.access import assignable_people, field_definitions, team_store
from bridge.web.auth import Principal
from bridge.web.bodies import read_form
from bridge.web.errors import unprocessable
from bridge.web.keys import settings_key, store_key
from bridge.web.serialize import ticket_json
from bridge.web.teams import set_available
from bridge.web.ticket_actions import contact_or_none
from bridge.web.views import parse_cursor, usable_view, usable_views, view_json, view_page
from bridge.web.workspace import ticket_offers
from bridge.web.workspace.common import page, redirect, render

routes = web.RouteTableDef()

SAVED_VIEW_PAGE = 25
FIELD_PREFIX = "field."
# The update form carries its fields only when they were shown (an unticked checkbox sends
# nothing: without this mark a form without fields would clear them).
FIELDS_SHOWN = "fields_shown"


def form_fields(definitions: list[FieldDef], ticket: Ticket) -> list[dict[str, Any]]:
    """The fields of the ticket's form (core, then its group's) with their values."""
    return [{**d.to_dict(), "value": ticket.field_values.get(d.key)}
            for d in definitions if d.on_form_of(ticket.group)]


async def group_choices(app: web.Application, who: Principal, ticket: Ticket
                        ) -> list[str] | None:
    """The groups `who` may move the ticket to ("" : the pool), None when they may not
    (agents and read-only people see the group, a manager chooses among theirs)."""
    if allowed(who.role, Permission.TICKETS_ALL):
        return ["", *(g.name for g in await team_store(app).groups())]
    if allowed(who.role, Permission.TICKETS_ASSIGN):
        return sorted({"", ticket.group, *who.groups})
    return None


async def assignee_choices(app: web.Application, keep: str = "") -> list[str]:
    """Everyone a ticket may be assigned to (token agents and people of a working role),
    and `keep`, the name the form holds now (a ticket's assignee, the tickets page's
    filter), so that saving or re-applying the form keeps it."""
    names = {p.name for p in await assignable_people(app)}
    if keep:
        names.add(keep)
    return sorted(names)


def _number(key: str, raw: str) -> int | float:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise unprocessable(f"{key}: a number", "invalid_field") from None


def _posted(definition: FieldDef, form: MultiDictProxy[Any]) -> Any:
    """The value the form gives a field (None: empty, which clears it)."""
    name = FIELD_PREFIX + definition.key
    if definition.type is FieldType.MULTISELECT:
        return [str(v) for v in form.getall(name, [])] or None
    if definition.type is FieldType.CHECKBOX:
        return name in form
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    return _number(definition.key, raw) if definition.type is FieldType.NUMBER else raw


def fields_from_form(definitions: list[FieldDef], ticket: Ticket, group: str | None,
                     form: MultiDictProxy[Any], *, shown: dict[str, Any] | None = None
                     ) -> dict[str, Any] | None:
    """The field values the update form changed, as the API's `fields` patch (None: no
    change), against the values it `shown` (default: the ticket's now). A field of the
    ticket's form that the new group's form lacks is left as it is (the new form shows
    after the move)."""
    if FIELDS_SHOWN not in form:
        return None
    was = ticket.field_values if shown is None else shown
    after = ticket.group if group is None else group
    patch: dict[str, Any] = {}
    for definition in definitions:
        if not (definition.on_form_of(ticket.group) and definition.on_form_of(after)):
            continue
        value = _posted(definition, form)
        current = was.get(definition.key)
        # The form gives text back stripped (and a multiselect in the options' order): a
        # value set with spaces through the API, unchanged, is not a change.
        if isinstance(current, str):
            current = current.strip() or None
        same = (sorted(value) == sorted(current) if isinstance(value, list)
                and isinstance(current, list) else value == current)
        if same or (value is False and current is None):
            continue
        patch[definition.key] = value
    return patch or None


async def ticket_extras(request: web.Request, who: Principal, ticket: Ticket
                        ) -> dict[str, Any]:
    """What the ticket page adds for teams: the form's fields, the group choices and the
    assignee choices (whom `who` may give this ticket to)."""
    app = request.app
    return {"fields": form_fields(await field_definitions(app), ticket),
            "group_choices": await group_choices(app, who, ticket),
            "agents": await ticket_offers.assignees(app, who, ticket)}


def _back_to(request: web.Request, target: str) -> str:
    return target if target.startswith("/app/") and not target.startswith("//") else "/app/"


@routes.post("/app/availability")
@page(back=lambda request: "/app/")
async def availability(request: web.Request, who: Principal) -> web.Response:
    form = await read_form(request)
    wanted = str(form.get("available", ""))
    if wanted not in ("0", "1"):
        raise unprocessable("available must be 0 or 1")
    person = await set_available(request, who, wanted == "1")
    notice = ("You are available for assignment" if person.available
              else "You are not available for assignment")
    return redirect(request, _back_to(request, str(form.get("next", ""))), notice=notice)


@routes.get("/app/saved-views/{id}")
@page()
async def saved_view(request: web.Request, who: Principal) -> web.Response:
    """A page of a saved view (of one of its groups when it is grouped: ?group=)."""
    view = await usable_view(request, who, request.match_info["id"])
    group = request.query.get("group")
    cursor_text = request.query.get("cursor", "")
    tickets, next_cursor, count = await view_page(
        request, who, view, group=group, cursor=parse_cursor(cursor_text),
        limit=SAVED_VIEW_PAGE)
    store = request.app[store_key]
    settings = request.app[settings_key]
    now_ms = int(time.time() * 1000)
    rows = [ticket_json(t, await contact_or_none(store, t), settings=settings, now_ms=now_ms)
            for t in tickets]
    return render(request, "saved_view.html", who=who,
                  view=await view_json(request, who, view), group=group,
                  tickets=rows, count=count, next_cursor=next_cursor,
                  first_page=not cursor_text)


async def saved_views(request: web.Request, who: Principal) -> list[dict[str, Any]]:
    """The tickets page's list: the viewer's usable views with their counts."""
    if not allowed(who.role, Permission.VIEWS_READ):
        return []
    return await usable_views(request, who)

