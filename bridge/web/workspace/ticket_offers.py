"""What the ticket page offers its viewer: only the forms whose posts the server would
take. Each answer comes from the rule the action's handler applies (bridge/core/teams.py's
`allowed`, `ticket_access` and `assignment_refusal`; the ticket model's
`check_transition`), so a form the page shows is one the viewer can use, and the handlers
keep checking every post as before. (Macros that send follow `session_refusal`, which the
page already computes.)"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bridge.core.teams import Access, Permission, allowed, assignment_refusal
from bridge.core.teams import ticket_access as access_of
from bridge.core.tickets import Ticket, TransitionError, check_transition
from bridge.web.access import assignable_people
from bridge.web.auth import Principal


@dataclass(frozen=True, kw_only=True)
class Offers:
    note: bool  # the internal note (tickets.note on a ticket the viewer reads)
    work: bool  # reply and end of session (tickets.work on a ticket they work)
    change: bool  # macros and the update form: working it, and it is not closed


def final(ticket: Ticket) -> bool:
    """Whether the ticket model takes no change at all (closed is final): the store refuses
    every update and macro on it, whatever is asked."""
    try:
        check_transition(ticket.status, ticket.status)
    except TransitionError:
        return True
    return False


def offers(who: Principal, ticket: Ticket) -> Offers:
    access = access_of(who.actor, ticket.group, ticket.assignee)
    works = allowed(who.role, Permission.TICKETS_WORK) and access >= Access.WORK
    return Offers(note=allowed(who.role, Permission.TICKETS_NOTE) and access >= Access.READ,
                  work=works, change=works and not final(ticket))


async def assignees(app: web.Application, who: Principal, ticket: Ticket) -> list[str]:
    """The people `who` may give the ticket to without moving it (a ticket with a group: its
    members; an agent: themselves), "" (nobody) when they may unassign it, and its
    assignee now, so that saving the form unchanged keeps it."""
    def refused(name: str, groups: frozenset[str] | None) -> bool:
        return assignment_refusal(
            who.actor, current_group=ticket.group, current_assignee=ticket.assignee,
            group=ticket.group, assignee=name, assignee_groups=groups) is not None

    names = {p.name for p in await assignable_people(app) if not refused(p.name, p.groups)}
    if not refused("", None):
        names.add("")
    names.add(ticket.assignee)
    return sorted(names)
