"""People, groups, availability, taking tickets and ticket field definitions.

    GET    /api/v1/me                      who the token is (role, groups, permissions)
    PUT    /api/v1/me/availability         {"available": bool} for automatic assignment
    GET    /api/v1/agents                  people (with their load)
    POST   /api/v1/agents                  admin; a person -> 201 {"agent", "token"}
    GET    /api/v1/agents/{name}
    PATCH  /api/v1/agents/{name}           admin
    DELETE /api/v1/agents/{name}           admin
    POST   /api/v1/agents/{name}/token     admin; a new token (the old one stops working)
    GET    /api/v1/groups ; POST (admin) ; DELETE /api/v1/groups/{name} (admin)
    POST   /api/v1/tickets/{id}/take       assign an unassigned ticket to oneself
    GET    /api/v1/fields ; PUT/DELETE /api/v1/fields/{key} (admin)
"""

from __future__ import annotations

import functools
import time
import zoneinfo
from typing import Any

from aiohttp import web

from bridge.assignment import Assigner
from bridge.core.changes import Origin
from bridge.core.teams import (
    MAX_GROUPS,
    Access,
    Group,
    Permission,
    Person,
    Role,
    allowed,
    check_name,
    check_person,
    holder_refusal,
)
from bridge.core.ticket_fields import MAX_FIELDS, parse_definition
from bridge.people import group_removal_refusal
from bridge.store.views import ViewStore
from bridge.web.access import check_assignment, field_definitions, need, team_store
from bridge.web.api import ticket_response
from bridge.web.auth import Principal, demand, require
from bridge.web.bodies import json_object
from bridge.web.errors import ApiError, conflict, not_found, unprocessable
from bridge.web.keys import redis_key, settings_key, store_key
from config.settings import RESERVED_AUTHORS

routes = web.RouteTableDef()

_PERSON_KEYS = frozenset({"name", "display_name", "locale", "time_zone", "role", "groups",
                          "capacity", "available"})


@functools.cache
def _time_zones() -> frozenset[str]:
    """The IANA names this system knows (a set: ZoneInfo would read any path it is given)."""
    return frozenset(zoneinfo.available_timezones())


def now_ms() -> int:
    return int(time.time() * 1000)


def person_json(person: Person, load: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": person.name, "role": person.role.value,
        "display_name": person.display_name or person.name, "locale": person.locale or None,
        "time_zone": person.time_zone or None, "groups": sorted(person.groups),
        "capacity": person.capacity, "available": person.available}
    if load is not None:
        out["load"] = load
    return out


def _invalid(exc: ValueError) -> ApiError:
    return unprocessable(str(exc))


async def _person_from(request: web.Request, data: dict[str, Any],
                       base: Person | None) -> Person:
    """A person from a POST/PATCH body (PATCH: over `base`), every value checked."""
    # The record's own values (not person_json's, which shows the name where no display
    # name was given: merged from it, any change stored the name as the display name).
    merged = {**({**base.__dict__, "role": base.role.value, "groups": sorted(base.groups)}
                 if base else {}), **data}
    try:
        name = check_name("name", merged.get("name", ""))
    except ValueError as exc:
        raise _invalid(exc) from None
    if name in RESERVED_AUTHORS:
        raise unprocessable(f"{name} is a built-in author's name", "reserved_name")
    try:
        role = Role(merged.get("role", Role.AGENT))
    except ValueError:
        raise unprocessable(f"role must be one of {', '.join(Role)}") from None
    display = merged.get("display_name") or ""
    locale = merged.get("locale") or ""
    zone = merged.get("time_zone") or ""
    if not isinstance(display, str):
        raise unprocessable("display_name must be a string of at most 100 characters")
    if not isinstance(locale, str):
        raise unprocessable("locale must look like en, fr or pt-BR")
    if not isinstance(zone, str) or len(zone) > 64:
        raise unprocessable("time_zone must be an IANA time zone such as Africa/Dakar")
    if zone and zone not in _time_zones():
        raise unprocessable(f"time_zone {zone[:64]!r} is not an IANA time zone")
    groups = merged.get("groups", [])
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS or not all(
            isinstance(g, str) for g in groups):
        raise unprocessable(f"groups must be a list of at most {MAX_GROUPS} group names")
    known = {g.name for g in await team_store(request.app).groups()}
    if unknown := set(groups) - known:
        raise unprocessable(f"no such group(s): {', '.join(sorted(unknown))}",
                            "unknown_group")
    capacity = merged.get("capacity", 10)
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise unprocessable("capacity must be a whole number from 0 to 1000")
    available = merged.get("available", False)
    if not isinstance(available, bool):
        raise unprocessable("available must be true or false")
    if role is Role.READ_ONLY and "available" not in data:
        available = False  # made read-only: out of the rotation with it
    try:
        return check_person(Person(
            name=name, role=role, display_name=display, locale=locale, time_zone=zone,
            groups=frozenset(groups), capacity=capacity, available=available))
    except ValueError as exc:
        raise _invalid(exc) from None


async def _drain(request: web.Request, person: Person) -> None:
    """Someone became available (or got room): hand them their groups' waiting tickets."""
    await Assigner(request.app[store_key], team_store(request.app),
                   request.app[settings_key].teams).drain_for(person, now_ms())


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    who = require(request, Permission.TICKETS_READ)
    person = await team_store(request.app).find_person(who.name)
    return web.json_response({
        "name": who.name, "role": who.role.value, "groups": sorted(who.groups),
        "display_name": (person.display_name if person else "") or who.name,
        "available": person.available if person else False,
        "permissions": sorted(p.value for p in Permission if allowed(who.role, p))})


@routes.put("/api/v1/me/availability")
async def set_availability(request: web.Request) -> web.Response:
    who = require(request, Permission.AVAILABILITY)
    data = await json_object(request, frozenset({"available"}))
    person = await set_available(request, who, data.get("available"))
    return web.json_response(person_json(person, await team_store(request.app).load(
        person.name)))


async def set_available(request: web.Request, who: Principal, available: object) -> Person:
    """Make `who` available for automatic assignment or not (the API and the workspace's
    toggle): 403 for a role without it, 409 without a person record, 422 for a non-bool."""
    demand(who, Permission.AVAILABILITY)
    if not isinstance(available, bool):
        raise unprocessable("available must be true or false")
    store = team_store(request.app)
    person = await store.find_person(who.name)
    if person is None:
        raise conflict("not_a_person", f"{who.name} has no agent record: an admin adds it "
                                       "(POST /api/v1/agents or `bridge agents add`)")
    person = Person(**{**person.__dict__, "available": available})
    await store.save_person(person)
    await _drain(request, person)
    return person


@routes.get("/api/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_READ)
    store = team_store(request.app)
    people = await store.people()
    loads = await store.loads(p.name for p in people)
    return web.json_response({"agents": [person_json(p, loads[p.name]) for p in people]})


@routes.post("/api/v1/agents")
async def create_agent(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_MANAGE)
    data = await json_object(request, _PERSON_KEYS)
    person = await _person_from(request, data, None)
    store = team_store(request.app)
    if await store.find_person(person.name) is not None:
        raise conflict("agent_exists", f"agent {person.name} exists: PATCH it")
    token = store.new_token()
    await store.save_person(person, token=token)
    return web.json_response({"agent": person_json(person, 0), "token": token}, status=201)


async def _existing(request: web.Request) -> Person:
    found = await team_store(request.app).find_person(request.match_info["name"])
    if found is None:
        raise not_found(f"agent {request.match_info['name']} not found")
    return found


@routes.get("/api/v1/agents/{name}")
async def get_agent(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_READ)
    person = await _existing(request)
    return web.json_response(person_json(person, await team_store(request.app).load(person.name)))


async def _refuse_stranding(request: web.Request, name: str, after: Person | None) -> None:
    """409 when the change would leave unsolved tickets with an assignee who can no
    longer hold them (core.teams.could_still_hold)."""
    left = await request.app[store_key].stranded_by(name, after)
    if left:
        raise conflict("agent_holds_tickets", holder_refusal(name, left))


@routes.patch("/api/v1/agents/{name}")
async def patch_agent(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_MANAGE)
    base = await _existing(request)
    data = await json_object(request, _PERSON_KEYS - {"name"})
    person = await _person_from(request, data, base)
    if (person.role, person.groups) != (base.role, base.groups):
        await _refuse_stranding(request, person.name, person)
    await team_store(request.app).save_person(person)
    await _drain(request, person)
    return web.json_response(person_json(person, await team_store(request.app).load(person.name)))


@routes.delete("/api/v1/agents/{name}")
async def delete_agent(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_MANAGE)
    person = await _existing(request)
    await _refuse_stranding(request, person.name, None)
    await team_store(request.app).delete_person(person.name)
    return web.Response(status=204)


@routes.post("/api/v1/agents/{name}/token")
async def rotate_token(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_MANAGE)
    person = await _existing(request)
    store = team_store(request.app)
    token = store.new_token()
    await store.save_person(person, token=token)
    return web.json_response({"agent": person_json(person), "token": token})


@routes.get("/api/v1/groups")
async def list_groups(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_READ)
    store = team_store(request.app)
    people = await store.people()
    return web.json_response({"groups": [
        {"name": g.name, "description": g.description,
         "members": sorted(p.name for p in people if g.name in p.groups)}
        for g in await store.groups()]})


@routes.post("/api/v1/groups")
async def create_group(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_MANAGE)
    data = await json_object(request, frozenset({"name", "description"}))
    try:
        name = check_name("name", data.get("name", ""))
    except ValueError as exc:
        raise _invalid(exc) from None
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        raise unprocessable("description must be a string of at most 500 characters")
    store = team_store(request.app)
    if await store.group_exists(name):
        raise conflict("group_exists", f"group {name} exists")
    await store.save_group(Group(name=name, description=description))
    return web.json_response({"name": name, "description": description, "members": []},
                             status=201)


@routes.delete("/api/v1/groups/{name}")
async def delete_group(request: web.Request) -> web.Response:
    require(request, Permission.PEOPLE_MANAGE)
    name = request.match_info["name"]
    store = team_store(request.app)
    if not await store.group_exists(name):
        raise not_found(f"group {name} not found")
    refusal = await group_removal_refusal(store, request.app[store_key], name)
    if refusal is not None:
        raise refusal  # 409 (the edge maps a Conflict)
    await store.delete_group(name)
    return web.Response(status=204)


@routes.post("/api/v1/tickets/{id}/take")
async def take(request: web.Request) -> web.Response:
    who = require(request, Permission.TICKETS_TAKE)
    store = request.app[store_key]
    ticket = await store.get_ticket(request.match_info["id"])
    need(who, ticket, Access.READ)
    if ticket.assignee == who.name:
        return await ticket_response(request, ticket)
    if ticket.assignee and not allowed(who.role, Permission.TICKETS_ASSIGN):
        raise conflict("already_assigned", f"ticket {ticket.id} is assigned to "
                                           f"{ticket.assignee}")
    await check_assignment(request.app, who, ticket, group=None, assignee=who.name)

    def still_unassigned(current: Any) -> None:
        # Two agents taking at once: the second one's update sees the first's name.
        if current.assignee not in ("", ticket.assignee):
            raise ApiError(409, "already_assigned", f"ticket {ticket.id} was just taken by "
                                                    f"{current.assignee}")

    updated, _ = await store.update_ticket(ticket.id, author=who.name, now_ms=now_ms(),
                                           assignee=who.name, guard=still_unassigned,
                                           origin=Origin.AGENT)
    return await ticket_response(request, updated)


@routes.get("/api/v1/fields")
async def list_fields(request: web.Request) -> web.Response:
    require(request, Permission.TICKETS_READ)
    config_keys = {f.key for f in request.app[settings_key].config_fields}
    return web.json_response({"fields": [
        {**f.to_dict(), "source": "config" if f.key in config_keys else "api"}
        for f in await field_definitions(request.app)]})


@routes.put("/api/v1/fields/{key}")
async def put_field(request: web.Request) -> web.Response:
    require(request, Permission.FIELDS_MANAGE)
    key = request.match_info["key"]
    data = await json_object(request, frozenset({"title", "type", "options",
                                                 "required_on_solve", "groups",
                                                 "description"}))
    try:
        definition = parse_definition({**data, "key": key})
    except ValueError as exc:
        raise _invalid(exc) from None
    if key in {f.key for f in request.app[settings_key].config_fields}:
        raise conflict("field_in_config", f"{key} is defined in config/teams.toml")
    store = team_store(request.app)
    existing = await store.field_definitions()
    if key not in {f.key for f in existing} and len(existing) >= MAX_FIELDS:
        raise unprocessable(f"at most {MAX_FIELDS} fields")
    known = {g.name for g in await store.groups()}
    if unknown := definition.groups - known:
        raise unprocessable(f"no such group(s): {', '.join(sorted(unknown))}", "unknown_group")
    await store.save_field(definition)
    return web.json_response(definition.to_dict())


@routes.delete("/api/v1/fields/{key}")
async def delete_field(request: web.Request) -> web.Response:
    require(request, Permission.FIELDS_MANAGE)
    key = request.match_info["key"]
    if key in {f.key for f in request.app[settings_key].config_fields}:
        raise conflict("field_in_config", f"{key} is defined in config/teams.toml")
    # A view filtering on it would go on filtering on a field that no longer exists, and
    # could no longer be saved (its conditions name an unknown field).
    using = [v.name for v in await ViewStore(request.app[redis_key]).views()
             if key in v.conditions.fields]
    if using:
        raise conflict("field_in_use", f"saved views filter on {key}: "
                                       f"{', '.join(sorted(using)[:10])}; change them first")
    if not await team_store(request.app).delete_field(key):
        raise not_found(f"field {key} not found")
    return web.Response(status=204)
