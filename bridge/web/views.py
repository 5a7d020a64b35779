"""Saved views: personal (their owner's) or shared (managers and admins edit them).

    GET    /api/v1/views                   the views one can use, with their counts
    GET    /api/v1/views/counts            {"counts": {id: count}}
    POST   /api/v1/views                   {"name", "conditions", "sort", "group_by", "shared"}
    GET    /api/v1/views/{id}              the view, its count and its groups' counts
    PATCH  /api/v1/views/{id}              (rebuilds its sets)
    DELETE /api/v1/views/{id}
    GET    /api/v1/views/{id}/tickets?group=&cursor=&limit=
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from bridge.core.messages import Channel
from bridge.core.teams import Permission, Role, allowed
from bridge.core.ticket_fields import FieldType, check_value
from bridge.core.tickets import Ticket
from bridge.core.views import View, aging_range, parse_view, views_refusal
from bridge.store.records import MAX_PAGE, NotFound
from bridge.store.views import ViewStore
from bridge.web.access import field_definitions, visible_to
from bridge.web.api import ticket_body
from bridge.web.auth import Principal, require
from bridge.web.bodies import json_object
from bridge.web.errors import ApiError, not_found, unprocessable
from bridge.web.keys import redis_key, settings_key, store_key

routes = web.RouteTableDef()
_CURSOR = re.compile(r"([0-9]{1,15})\.([0-9]{1,20})")
_BODY = frozenset({"name", "conditions", "sort", "group_by", "shared"})


def now_ms() -> int:
    return int(time.time() * 1000)


def view_store(app: web.Application) -> ViewStore:
    return ViewStore(app[redis_key])


def _scope(who: Principal) -> frozenset[str] | None:
    """The agents' groups whose tickets `who` sees in views (None: all; "": the pool)."""
    return None if allowed(who.role, Permission.TICKETS_ALL) else who.groups | {""}


def _usable(who: Principal, view: View) -> bool:
    return not view.owner or view.owner == who.name


def _may_edit(who: Principal, view: View) -> bool:
    if view.owner:
        return view.owner == who.name or who.role is Role.ADMIN
    return allowed(who.role, Permission.VIEWS_SHARED)


def _thresholds(app: web.Application, view: View) -> tuple[int, int]:
    """The aging thresholds of the view's channels; they must agree (422 at save)."""
    settings = app[settings_key]
    channels = [Channel(c) for c in view.conditions.channel]  # checked when saved
    pairs = {(p.aging_yellow_after_s, p.aging_red_after_s)
             for p in (settings.policy(c) for c in channels or list(Channel))}
    if len(pairs) != 1:
        raise unprocessable("an aging condition needs channels whose aging thresholds agree "
                            "(config/bridge.toml): add a channel condition")
    return pairs.pop()


def _range(app: web.Application, view: View) -> tuple[float, float]:
    if not view.conditions.aging:
        return float("-inf"), float("inf")
    yellow, red = _thresholds(app, view)
    return aging_range(view.conditions.aging, now_ms=now_ms(), yellow_after_s=yellow,
                       red_after_s=red)


async def _checked(request: web.Request, view_id: str, owner: str, data: dict[str, Any],
                   version: int) -> View:
    try:
        view = parse_view(view_id, owner, data, version=version)
    except ValueError as exc:
        raise unprocessable(str(exc)) from None
    if unknown := set(view.conditions.channel) - {c.value for c in Channel}:
        raise unprocessable(f"no such channel(s): {', '.join(sorted(unknown))}")
    if view.conditions.aging:
        _thresholds(request.app, view)
    definitions = {d.key: d for d in await field_definitions(request.app)}
    for key, value in view.conditions.fields.items():
        if key not in definitions:
            raise unprocessable(f"conditions.fields: no field {key!r}", "invalid_field")
        definition = definitions[key]
        try:
            # A multiselect condition names one option the ticket's value holds.
            check_value(definition, [value] if definition.type is FieldType.MULTISELECT
                        and isinstance(value, str) else value)
        except ValueError as exc:
            raise unprocessable(f"conditions.fields: {exc}", "invalid_field") from None
    return view


async def view_json(request: web.Request, who: Principal, view: View) -> dict[str, Any]:
    counts = await view_store(request.app).counts(view, *_range(request.app, view),
                                                  _scope(who))
    out = view.to_dict()
    out["count"] = sum(counts.values())
    if view.group_by is not None:
        out["groups"] = [{"value": g or None, "count": n} for g, n in sorted(counts.items())]
    return out


async def usable_views(request: web.Request, who: Principal) -> list[dict[str, Any]]:
    """The views `who` may use (personal ones of theirs, shared ones), each with its count
    (the API's list and the workspace's tickets page)."""
    views = [v for v in await view_store(request.app).views() if _usable(who, v)]
    return [await view_json(request, who, v) for v in views]


async def usable_view(request: web.Request, who: Principal, view_id: str) -> View:
    """The view, if `who` may use it (404 otherwise: another's personal view stays
    unknown)."""
    try:
        view = await view_store(request.app).get_view(view_id)
    except NotFound:
        raise not_found(f"view {view_id} not found") from None
    if not _usable(who, view):
        raise not_found(f"view {view.id} not found")
    return view


async def _own_view(request: web.Request, who: Principal) -> View:
    return await usable_view(request, who, request.match_info["id"])


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """A page's next_cursor as given back ("<ms>.<id>"; empty: the first page)."""
    if not raw:
        return None
    match = _CURSOR.fullmatch(raw)
    if not match:
        raise unprocessable("cursor must be the next_cursor of a previous page")
    return int(match.group(1)), match.group(2)


async def view_page(request: web.Request, who: Principal, view: View, *, group: str | None,
                    cursor: tuple[int, str] | None, limit: int
                    ) -> tuple[list[Ticket], str | None, int]:
    """A page of the view as `who` sees it (of one group of a grouped view): its tickets,
    the next page's cursor (None: the last page) and the count."""
    if group is not None and view.group_by is None:
        raise unprocessable("this view is not grouped: send no group")
    low, high = _range(request.app, view)
    store = view_store(request.app)
    ids, next_cursor = await store.page(view, low_ms=low, high_ms=high, scope=_scope(who),
                                        group=group, cursor=cursor, limit=limit)
    tickets = await request.app[store_key].get_tickets(ids)
    # The sets trail the tickets by the relay's delay: a ticket that changed since is
    # checked again here, conditions and who may see it alike (moved to another group
    # meanwhile, it is no longer this person's to read).
    visible = visible_to(who)
    tickets = [t for t in tickets
               if view.conditions.matches(t) and (visible is None or visible(t))]
    counts = await store.counts(view, low, high, _scope(who))
    return (tickets, f"{next_cursor[0]}.{next_cursor[1]}" if next_cursor else None,
            counts.get(group, 0) if group is not None else sum(counts.values()))


@routes.get("/api/v1/views")
async def list_views(request: web.Request) -> web.Response:
    who = require(request, Permission.VIEWS_READ)
    return web.json_response({"views": await usable_views(request, who)})


@routes.get("/api/v1/views/counts")
async def view_counts(request: web.Request) -> web.Response:
    who = require(request, Permission.VIEWS_READ)
    store = view_store(request.app)
    counts = {}
    for view in await store.views():
        if _usable(who, view):
            counts[view.id] = sum((await store.counts(view, *_range(request.app, view),
                                                      _scope(who))).values())
    return web.json_response({"counts": counts})


@routes.post("/api/v1/views")
async def create_view(request: web.Request) -> web.Response:
    who = require(request, Permission.VIEWS_READ)
    data = await json_object(request, _BODY)
    shared = data.pop("shared", False)
    if not isinstance(shared, bool):
        raise unprocessable("shared must be true or false")
    require(request, Permission.VIEWS_SHARED if shared else Permission.VIEWS_PERSONAL)
    store = view_store(request.app)
    view = await _checked(request, "0", "" if shared else who.name, data, 1)
    refusal = views_refusal(await store.views(), view.owner)
    if refusal:
        raise unprocessable(refusal, "too_many_views")
    view = View(**{**view.__dict__, "id": await store.new_id()})
    await store.save_view(view, data)
    await store.rebuild(view, request.app[store_key])
    return web.json_response(await view_json(request, who, view), status=201)


@routes.get("/api/v1/views/{id}")
async def get_view(request: web.Request) -> web.Response:
    who = require(request, Permission.VIEWS_READ)
    return web.json_response(await view_json(request, who, await _own_view(request, who)))


@routes.patch("/api/v1/views/{id}")
async def patch_view(request: web.Request) -> web.Response:
    who = require(request, Permission.VIEWS_READ)
    view = await _own_view(request, who)
    if not _may_edit(who, view):
        raise ApiError(403, "forbidden", "shared views are edited by managers and admins")
    data = await json_object(request, _BODY - {"shared"})
    definition = {**{k: v for k, v in view.to_dict().items()
                     if k in ("name", "conditions", "sort", "group_by")}, **data}
    updated = await _checked(request, view.id, view.owner, definition, view.version + 1)
    store = view_store(request.app)
    await store.save_view(updated, definition)
    await store.rebuild(updated, request.app[store_key])
    return web.json_response(await view_json(request, who, updated))


@routes.delete("/api/v1/views/{id}")
async def delete_view(request: web.Request) -> web.Response:
    who = require(request, Permission.VIEWS_READ)
    view = await _own_view(request, who)
    if not _may_edit(who, view):
        raise ApiError(403, "forbidden", "shared views are deleted by managers and admins")
    await view_store(request.app).delete_view(view.id)
    return web.Response(status=204)


@routes.get("/api/v1/views/{id}/tickets")
async def view_tickets(request: web.Request) -> web.Response:
    """A page of the view (of one group of a grouped view: ?group=, "" for unassigned)."""
    who = require(request, Permission.VIEWS_READ)
    view = await _own_view(request, who)
    q = request.query
    raw_limit = q.get("limit", "50")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise unprocessable(f"limit must be a number from 1 to {MAX_PAGE}")
    tickets, next_cursor, count = await view_page(
        request, who, view, group=q.get("group"), cursor=parse_cursor(q.get("cursor")),
        limit=int(raw_limit))
    return web.json_response({
        "tickets": [await ticket_body(request, t) for t in tickets],
        "next_cursor": next_cursor, "count": count})
