"""Who may hold a ticket, and whether a group may go: bridge/core/teams.py's rules applied to
the people and groups Redis holds. The API (bridge/web/access.py, bridge/web/teams.py),
`bridge agents|groups` and the automations (workers/automations.py) all ask here, so that a
change refused to one of them is refused to all.
"""

from __future__ import annotations

from collections.abc import Collection

from bridge.core.teams import (
    STRANDED_NAMED,
    Actor,
    Person,
    Refusal,
    Role,
    assignment_refusal,
    group_refusal,
)
from bridge.core.tickets import Ticket
from bridge.store.teams import TeamStore
from bridge.store.tickets import Conflict, TicketStore


def token_agent(name: str) -> Person:
    """A BRIDGE_AGENT_TOKENS agent without a person record: an agent of no group."""
    return Person(name=name, role=Role.AGENT)


async def assignable(teams: TeamStore, token_agents: Collection[str], name: str
                     ) -> Person | None:
    """The person a ticket may be assigned to: a BRIDGE_AGENT_TOKENS agent or a person of
    any working role (not read-only); a person record wins over a token of the same name."""
    person = await teams.find_person(name)
    if person is not None:
        return None if person.role is Role.READ_ONLY else person
    return token_agent(name) if name in token_agents else None


async def assignable_people(teams: TeamStore, token_agents: Collection[str]) -> list[Person]:
    """Everyone `assignable` accepts, read at once (the forms' choices)."""
    people = await teams.people()
    recorded = {p.name for p in people}
    return [*(p for p in people if p.role is not Role.READ_ONLY),
            *(token_agent(name) for name in token_agents if name not in recorded)]


async def assignment_problem(teams: TeamStore, token_agents: Collection[str], actor: Actor,
                             ticket: Ticket, *, group: str | None, assignee: str | None
                             ) -> Refusal | None:
    """Why `actor` may not give the ticket `group` and `assignee` (None: unchanged; "" for
    the pool and for nobody), or None. Codes: unknown_group, unknown_agent, not_a_member
    (what was asked for does not exist or cannot be), forbidden (the actor's role)."""
    group_after = ticket.group if group is None else group
    assignee_after = ticket.assignee if assignee is None else assignee
    if group and not await teams.group_exists(group):
        return Refusal("unknown_group", f"group must name a group (GET /api/v1/groups); "
                                        f"{group!r} is not one")
    target = None
    if assignee_after:
        target = await assignable(teams, token_agents, assignee_after)
        if target is None and assignee is not None:
            return Refusal("unknown_agent", f"assignee must name an agent (BRIDGE_AGENT_TOKENS "
                                            f"or GET /api/v1/agents, not read-only) or be "
                                            f"null; {assignee_after!r} is not one")
    return assignment_refusal(
        actor, current_group=ticket.group, current_assignee=ticket.assignee,
        group=group_after, assignee=assignee_after,
        assignee_groups=target.groups if target else None)


async def group_removal_refusal(teams: TeamStore, tickets: TicketStore, name: str
                                ) -> Conflict | None:
    """Why a group may not be removed: its members would belong to no such group, its
    unsolved tickets to a group nobody can join."""
    members = [p.name for p in await teams.people() if name in p.groups]
    if members:
        return Conflict("group_has_members",
                        f"group {name} still has members: {', '.join(members)}")
    left = await tickets.unsolved_ids(lambda t: t.group == name, limit=STRANDED_NAMED)
    if left:
        return Conflict("group_has_tickets", group_refusal(name, left))
    return None
