"""The teams consumer of the change log (run by the relay process, workers/relay.py):

1. capacity: each changed ticket counts against its assignee while it is an active
   conversation, and stops counting when it is solved, closed, its session ends or it goes
   to someone else (then the group's waiting tickets get the freed room);
2. automatic assignment (config/teams.toml [assignment] auto): new and reopened tickets go
   round robin to the available agents of their group under capacity; a new ticket joins
   the configured default group either way;
3. saved views: each changed ticket's place in every view's sets.

At least once and in order per ticket: every step is idempotent (sets, the round-robin
script's record of who holds a ticket, updates that change nothing the second time).
Nothing here runs on a webhook's request path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis.asyncio

from bridge.assignment import AUTHOR, Assigner, holds_capacity
from bridge.core.changes import OPENING_ACTIONS, Change, ChangeKind, Origin
from bridge.core.teams import TeamConfig
from bridge.core.tickets import Ticket
from bridge.store.changelog import TEAMS_CONSUMER
from bridge.store.teams import TeamStore
from bridge.store.tickets import TicketStore
from bridge.store.views import ViewStore
from config.settings import Settings

log = logging.getLogger("workers.teams")

# Routing actions after which the ticket may want an agent.
_WANTS_AGENT = OPENING_ACTIONS | {"reopen"}
# Routing actions that change nothing a view or a load depends on.
_NOTHING_TO_INDEX = frozenset({"duplicate", "csat_answer"})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TeamsConsumer:
    store: TicketStore
    teams: TeamStore
    views: ViewStore
    config: TeamConfig
    name: str = TEAMS_CONSUMER
    assigned: list[str] = field(default_factory=list)  # for logs and tests

    @classmethod
    def build(cls, settings: Settings, aredis: redis.asyncio.Redis) -> TeamsConsumer:
        return cls(TicketStore(aredis, contact_key=settings.contact_key_bytes),
                   TeamStore(aredis), ViewStore(aredis), settings.teams)

    async def handle(self, changes: list[Change]) -> None:
        # Ticket ids -> their contact (a change log entry names both; reading a ticket by
        # id alone may come before the web process indexed a new one).
        touched: dict[str, str] = {}
        loads: dict[str, str] = {}
        wanting: dict[str, str] = {}
        for change in changes:
            cid = change.contact_id
            if change.kind is ChangeKind.UPDATED:
                touched[change.ticket_id] = cid
                if (change.assignee is not None or change.session_ended
                        or change.status_from != change.status_to):
                    loads[change.ticket_id] = cid  # what an agent's capacity depends on
            elif change.kind is ChangeKind.ROUTED and change.action not in _NOTHING_TO_INDEX:
                touched[change.ticket_id] = cid
                if change.previous_ticket_id:  # closed at the thread limit
                    touched[change.previous_ticket_id] = loads[change.previous_ticket_id] = cid
                if change.action in _WANTS_AGENT:
                    wanting[change.ticket_id] = cid
                if change.action == "reopen":
                    # Its assignee, if any, holds it again. A ticket routing opened has
                    # none: an assignment since has its own change.
                    loads[change.ticket_id] = cid
        if not touched:
            return
        assigner = Assigner(self.store, self.teams, self.config)
        loaded = {t.id: t for t in await self.store.tickets_in(
            [(c, t) for t, c in loads.items()])}
        holders = {t.id: t.assignee if holds_capacity(t) else "" for t in loaded.values()}
        previous = await self.teams.hold_many(list(holders.items()))
        freed = any(previous[tid] and previous[tid] != holder
                    for tid, holder in holders.items())
        now = now_ms()
        if wanting and self.config.places_tickets:
            if not self.config.auto_assign:  # the assigner reads the ticket it assigns
                unread = [(c, t) for t, c in wanting.items() if t not in loaded]
                loaded.update((t.id, t) for t in await self.store.tickets_in(unread))
            for ticket_id, cid in wanting.items():
                await self._place(assigner, ticket_id, cid, now, loaded.get(ticket_id))
        if freed and self.config.auto_assign:
            for group in await self.teams.waiting_groups():
                self.assigned += await assigner.drain(group, now)
        views = await self.views.views()
        if views:
            tickets = await self.store.tickets_in([(c, t) for t, c in touched.items()])
            await self.views.refresh(tickets, views)

    async def _place(self, assigner: Assigner, ticket_id: str, cid: str, now: int,
                     ticket: Ticket | None) -> None:
        """`ticket`: as read for this batch (None: it could not be read)."""
        if self.config.auto_assign:
            if await assigner.assign(ticket_id, now, contact_id=cid):
                self.assigned.append(ticket_id)
            return
        group = self.config.group_for_channel(ticket.channel) if ticket else ""
        if group and ticket and not ticket.group:
            await self.store.update_ticket(ticket_id, author=AUTHOR, now_ms=now, group=group,
                                           contact_id=cid, origin=Origin.AUTOMATION)

