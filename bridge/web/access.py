"""The checks the API makes on a ticket for the principal asking: visibility, working
rights, assignment rules, ticket fields and the deployment's options (bridge/core/teams.py
decides; this module reads what the decision needs)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.core.teams import Access, Person, Role, assignment_refusal, ticket_access
from bridge.core.ticket_fields import FieldDef, check_values, merged, missing_on_solve
from bridge.core.tickets import Status, Ticket
from bridge.store.teams import TeamStore
from bridge.store.tickets import Conflict
from bridge.web.auth import Principal
from bridge.web.errors import ApiError, unprocessable
from bridge.web.keys import redis_key, settings_key


def team_store(app: web.Application) -> TeamStore:
    return TeamStore(app[redis_key])


def need(who: Principal, ticket: Ticket, level: Access) -> None:
    """403 unless `who` has `level` on the ticket."""
    access = ticket_access(who.actor, ticket.group, ticket.assignee)
    if access >= level:
        return
    if access is Access.NONE:
        raise ApiError(403, "forbidden", f"ticket {ticket.id} belongs to group "
                                         f"{ticket.group}, which is not yours")
    if not ticket.assignee:  # theirs to read, unassigned: the role is what stops them
        raise ApiError(403, "forbidden", f"the {who.role.value} role cannot work tickets")
    raise ApiError(403, "forbidden", f"ticket {ticket.id} is assigned to "
                                     f"{ticket.assignee}: only they or a manager can work it")


def visible_to(who: Principal) -> Any:
    """A predicate on tickets for lists (None: every ticket)."""
    actor = who.actor
    if actor.role is Role.ADMIN:
        return None
    return lambda t: ticket_access(actor, t.group, t.assignee) is not Access.NONE


async def assignable(app: web.Application, name: str) -> Person | None:
    """The person a ticket may be assigned to: a BRIDGE_AGENT_TOKENS agent or a person of
    any working role (not read-only); a person record wins over a token of the same name."""
    person = await team_store(app).find_person(name)
    if person is not None:
        return None if person.role is Role.READ_ONLY else person
    if name in app[settings_key].agent_tokens:
        return _token_agent(name)
    return None


async def assignable_people(app: web.Application) -> list[Person]:
    """Everyone `assignable` accepts, read at once (the forms' choices)."""
    people = await team_store(app).people()
    recorded = {p.name for p in people}
    return [*(p for p in people if p.role is not Role.READ_ONLY),
            *(_token_agent(name) for name in app[settings_key].agent_tokens
              if name not in recorded)]


def _token_agent(name: str) -> Person:
    """A BRIDGE_AGENT_TOKENS agent without a person record: an agent of no group."""
    return Person(name=name, role=Role.AGENT)


async def check_assignment(app: web.Application, who: Principal, ticket: Ticket, *,
                           group: str | None, assignee: str | None) -> None:
    group_after = ticket.group if group is None else group
    assignee_after = ticket.assignee if assignee is None else assignee
    if group and not await team_store(app).group_exists(group):
        raise unprocessable(f"group must name a group (GET /api/v1/groups); {group!r} is "
                            "not one", "unknown_group")
    target = None
    if assignee_after and assignee is not None:
        target = await assignable(app, assignee_after)
        if target is None:
            raise unprocessable("assignee must name an agent (BRIDGE_AGENT_TOKENS or GET "
                                "/api/v1/agents, not read-only) or be null", "unknown_agent")
    elif assignee_after:
        target = await assignable(app, assignee_after)
    refusal = assignment_refusal(
        who.actor, current_group=ticket.group, current_assignee=ticket.assignee,
        group=group_after, assignee=assignee_after,
        assignee_groups=target.groups if target else None)
    if refusal is not None:
        raise ApiError(422 if refusal.code == "not_a_member" else 403, refusal.code,
                       refusal.message)


async def field_definitions(app: web.Application) -> list[FieldDef]:
    """The config/ fields, then the admin API's."""
    return [*app[settings_key].config_fields, *await team_store(app).field_definitions()]


async def checked_fields(app: web.Application, ticket: Ticket, group: str | None,
                         values: Any) -> dict[str, Any] | None:
    if values is None:
        return None
    if not isinstance(values, dict):
        raise unprocessable("fields must be an object of field key -> value")
    try:
        return check_values(await field_definitions(app),
                            ticket.group if group is None else group, values)
    except ValueError as exc:
        raise unprocessable(str(exc), "invalid_field") from None


def status_allowed(app: web.Application, status: Status | None) -> None:
    if status is Status.HOLD and not app[settings_key].teams.hold_enabled:
        raise ApiError(409, "hold_disabled", "this deployment does not use the on-hold "
                                             "status (config/teams.toml [tickets] hold_enabled)")


def solve_guard(definitions: list[FieldDef], status: Status | None, group: str | None,
                values: dict[str, Any] | None) -> Any:
    """Inside the update's transaction: solving needs the ticket's required fields (with
    the same request's values)."""
    def guard(current: Ticket) -> None:
        if status is not Status.SOLVED or current.status is Status.SOLVED:
            return
        after = merged(current.field_values, values or {})
        missing = missing_on_solve(definitions, current.group if group is None else group,
                                   after)
        if missing:
            raise Conflict("required_fields_missing",
                           f"fill these fields to solve: {', '.join(missing)}")
    return guard


async def status_check(app: web.Application) -> Any:
    """For macros: refuse the status a macro sets where an agent would be refused it (on
    hold disabled, solving without the required fields), inside the update."""
    definitions = await field_definitions(app)
    hold_enabled = app[settings_key].teams.hold_enabled

    def check(current: Ticket, status: Status | None) -> None:
        if status is Status.HOLD and not hold_enabled:
            raise Conflict("hold_disabled", "this deployment does not use the on-hold status")
        solve_guard(definitions, status, None, None)(current)
    return check
