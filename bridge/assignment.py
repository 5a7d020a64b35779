"""Automatic assignment: new and reopened tickets go round robin to the available agents of
the ticket's group, under each agent's capacity (their active conversations).

Driven by the change log (workers/teams.py, a consumer in the relay process) and by an
agent becoming available (the API), never by a webhook. Used by the web process and the
relay, like bridge/sending.py. The atomic part (pick and count) is the store's script; the
ticket's assignee is then set by an ordinary update whose guard checks that the ticket still
wants an agent, and the slot is given back when it does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.core.changes import Origin
from bridge.core.teams import Person, TeamConfig
from bridge.core.tickets import UNSOLVED, SessionState, Ticket
from bridge.store.teams import TeamStore
from bridge.store.tickets import Conflict, NotFound, TicketStore

log = logging.getLogger("bridge.assignment")

AUTHOR = "auto-assign"


def holds_capacity(ticket: Ticket) -> bool:
    """An active conversation: assigned, unsolved, its session not ended."""
    return (bool(ticket.assignee) and ticket.status in UNSOLVED
            and ticket.session is SessionState.ACTIVE)


def wants_agent(ticket: Ticket) -> bool:
    return (not ticket.assignee and ticket.status in UNSOLVED
            and ticket.session is SessionState.ACTIVE)


class NotWanted(Conflict):
    def __init__(self) -> None:
        super().__init__("assigned_meanwhile", "the ticket no longer waits for an agent")


def _still_wanted(current: Ticket) -> None:
    if not wants_agent(current):
        raise NotWanted()


@dataclass
class Assigner:
    store: TicketStore
    teams: TeamStore
    config: TeamConfig

    async def sync(self, ticket: Ticket) -> None:
        """Count the ticket against its assignee while it is an active conversation; free
        the capacity when it is solved, its session ends or it goes to someone else."""
        await self.teams.hold(ticket.id, ticket.assignee if holds_capacity(ticket) else "")

    async def _read(self, ticket_id: str, contact_id: str) -> Ticket | None:
        if contact_id:  # from the change log: maybe not findable by id alone yet
            found = await self.store.tickets_in([(contact_id, ticket_id)])
            return found[0] if found else None
        try:
            return await self.store.get_ticket(ticket_id)
        except NotFound:
            return None

    async def assign(self, ticket_id: str, now_ms: int, contact_id: str = "") -> str | None:
        """Give a ticket that waits for an agent to the next one of its group with room;
        None when it does not wait or nobody has room (it then waits in its group)."""
        ticket = await self._read(ticket_id, contact_id)
        if ticket is None or not wants_agent(ticket):
            return None
        group = ticket.group or self.config.group_for_channel(ticket.channel)
        if not group:
            return None  # the shared pool: agents take tickets themselves
        agent = await self.teams.pick_agent(group, ticket.id)
        if agent is None:
            await self.teams.wait(group, ticket.id, now_ms)
            if ticket.group != group:
                await self._update(ticket, now_ms, group=group, assignee=None)
            return None
        await self.teams.stop_waiting(group, ticket.id)
        if not await self._update(ticket, now_ms, group=group, assignee=agent):
            # Taken, solved or ended meanwhile: the slot goes back (or to whoever took it).
            current = await self._read(ticket.id, ticket.contact_id)
            if current is not None:
                await self.sync(current)
            return None
        log.info("ticket %s assigned to %s (group %s)", ticket.id, agent, group)
        return agent

    async def _update(self, ticket: Ticket, now_ms: int, *, group: str,
                      assignee: str | None) -> bool:
        try:
            await self.store.update_ticket(ticket.id, author=AUTHOR, now_ms=now_ms,
                                           group=group, assignee=assignee,
                                           contact_id=ticket.contact_id,
                                           guard=_still_wanted, origin=Origin.AUTOMATION)
        except NotWanted:
            return False
        return True

    async def drain_for(self, person: Person, now_ms: int) -> list[str]:
        """Someone available (become so, or given room): their groups' waiting tickets,
        when assignment is automatic."""
        if not (person.available and self.config.auto_assign):
            return []
        assigned = []
        for group in sorted(person.groups):
            assigned += await self.drain(group, now_ms)
        return assigned

    async def drain(self, group: str, now_ms: int) -> list[str]:
        """Hand the group's waiting tickets to agents with room, oldest first."""
        assigned: list[str] = []
        for ticket_id in await self.teams.waiting(group):
            try:
                ticket = await self.store.get_ticket(ticket_id)
            except NotFound:
                ticket = None
            if ticket is None or not wants_agent(ticket):
                await self.teams.stop_waiting(group, ticket_id)
                continue
            if await self.assign(ticket_id, now_ms) is not None:
                assigned.append(ticket_id)
            elif wants_agent(await self.store.get_ticket(ticket_id)):
                break  # nobody has room: the rest wait too

        return assigned
