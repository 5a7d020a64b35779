"""The checks the API makes on a ticket for the principal asking: visibility, working
rights, assignment rules, ticket fields and the deployment's options (bridge/core/teams.py
decides; this module reads what the decision needs)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge import people
from bridge.core.teams import Access, Person, Role, ticket_access
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
    """The person a ticket may be assigned to (bridge.people.assignable)."""
    return await people.assignable(team_store(app), app[settings_key].agent_tokens, name)


async def assignable_people(app: web.Application) -> list[Person]:
    """Everyone `assignable` accepts, read at once (the forms' choices)."""
    return await people.assignable_people(team_store(app), app[settings_key].agent_tokens)


async def check_assignment(app: web.Application, who: Principal, ticket: Ticket, *,
                           group: str | None, assignee: str | None) -> None:
    """403 for what the role forbids, 422 for a group or person that does not exist or
    cannot hold the ticket (bridge.people.assignment_problem)."""
    problem = await people.assignment_problem(
        team_store(app), app[settings_key].agent_tokens, who.actor, ticket,
        group=group, assignee=assignee)
    if problem is not None:
        raise ApiError(403 if problem.code == "forbidden" else 422, problem.code,
                       problem.message)


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
