"""The report counters' change-log consumer (the relay process runs it): each change becomes
facts about its ticket (bridge/core/report_counts.py), which move the per-hour counters the
reports read (bridge/store/report_counters.py).

At least once, in order per ticket: each ticket's figures remember the last change applied,
and the counters and figures of a change are written in one transaction, so a batch handed
on again after a crash counts nothing twice.

What a change does not say is read from the ticket as it is when the change is handed on
(its current assignee when an update did not set one, its rating); a routed message's entry
says all the rest (bridge/store/route.lua), so routing's changes read no ticket but a
survey's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio

from bridge.core.changes import OPENING_ACTIONS, Change, ChangeKind
from bridge.core.report_counts import (
    Created,
    Fact,
    Increment,
    PublicReply,
    Rated,
    StatusTo,
    SurveySent,
    TicketFigures,
    step,
)
from bridge.core.tickets import EventType, Ticket
from bridge.store.changelog import REPORTS_CONSUMER
from bridge.store.report_counters import ReportCounters
from bridge.store.tickets import TicketStore

_PUBLIC_REPLIES = frozenset({EventType.AGENT_REPLY, EventType.MACRO_APPLIED})
_EVENTS_WANTED = frozenset({EventType.AGENT_REPLY.value, EventType.MACRO_APPLIED.value,
                            EventType.CSAT_SENT.value})


def _counts_nothing(change: Change) -> bool:
    """A change known to move no counter without reading anything: a delivery state, or a
    customer message appended to a ticket whose status it left as it was (the bulk of the
    traffic; routing records the statuses on the entry)."""
    return change.kind is ChangeKind.DELIVERY or (
        change.kind is ChangeKind.ROUTED and change.action == "append"
        and change.status_from != "" and change.status_from == change.status_to)


def _needs_ticket(change: Change) -> bool:
    """Whether counting the change reads its ticket. A routed change says all it counts,
    except a survey's answer (the rating is on the ticket) and an opening from an entry
    written before routing recorded the new ticket's channel and creation time."""
    if change.kind is not ChangeKind.ROUTED:
        return True
    if change.action in OPENING_ACTIONS:
        return not change.channel
    return change.action == "csat_answer"


@dataclass
class ReportConsumer:
    store: TicketStore
    counters: ReportCounters
    name: str = REPORTS_CONSUMER
    handled: int = field(default=0)

    @classmethod
    def on(cls, aredis: redis.asyncio.Redis) -> ReportConsumer:
        return cls(TicketStore(aredis), ReportCounters(aredis))

    async def handle(self, changes: list[Change]) -> None:
        relevant = [c for c in changes if not _counts_nothing(c)]
        if not relevant:
            return
        ticket_ids = sorted({tid for c in relevant
                             for tid in (c.ticket_id, c.previous_ticket_id) if tid})
        known = await self.counters.figures(ticket_ids)
        figures = {tid: f for tid, (f, _) in known.items()}
        last = {tid: log for tid, (_, log) in known.items()}
        tickets = await self._tickets({c.ticket_id: c.contact_id for c in relevant
                                       if _needs_ticket(c)})
        updates: dict[str, tuple[str, TicketFigures, str, list[Increment]]] = {}
        for change in relevant:
            for ticket_id, facts in await self._facts(change, tickets, figures):
                if self.counters.applied(last.get(ticket_id, ""), change.log_id):
                    continue
                increments: list[Increment] = []
                current = figures.get(ticket_id, TicketFigures())
                for fact in facts:
                    current, moved = step(current, fact)
                    increments += moved
                figures[ticket_id] = current
                earlier = updates.get(ticket_id)
                updates[ticket_id] = (ticket_id, current, change.log_id,
                                      (earlier[3] if earlier else []) + increments)
        await self.counters.apply(list(updates.values()))
        self.handled += len(relevant)

    async def _tickets(self, contact_of: dict[str, str]) -> dict[str, Ticket]:
        """The tickets by the contact their change names: a new ticket is in its
        ticket -> contact index only a round trip after its change, and the relay may come
        first. One not found there (its contact's id was migrated since) by the index."""
        found = {t.id: t for t in await self.store.tickets_in(
            [(cid, tid) for tid, cid in sorted(contact_of.items())])}
        missing = sorted(set(contact_of) - set(found))
        found.update((t.id, t) for t in await self.store.get_tickets(missing))
        return found

    async def _facts(self, change: Change, tickets: dict[str, Ticket],
                     figures: dict[str, TicketFigures]) -> list[tuple[str, list[Fact]]]:
        ticket = tickets.get(change.ticket_id)
        if change.kind is ChangeKind.ROUTED:
            return _routed_facts(change, ticket, figures)
        if ticket is None:  # gone since: nothing to count
            return []
        at = change.at_ms
        facts: list[Fact] = []
        if _EVENTS_WANTED.intersection(change.event_types):
            for event in await self.store.events_of_change(change):
                if event.type in _PUBLIC_REPLIES:
                    facts.append(PublicReply(event.at_ms, event.author))
                elif event.type is EventType.CSAT_SENT:
                    facts.append(SurveySent(event.at_ms))
        if change.status_to and change.status_to != change.status_from:
            # Who held it once the status changed, as the entry says (older entries: the
            # update's new assignee, else the ticket now, which may have changed hands).
            assignee = change.holder if change.holder is not None else (
                change.assignee if change.assignee is not None else ticket.assignee)
            facts.append(StatusTo(at, change.status_to, assignee))
        return [(ticket.id, facts)] if facts else []


def _routed_facts(change: Change, ticket: Ticket | None, figures: dict[str, TicketFigures]
                  ) -> list[tuple[str, list[Fact]]]:
    """A routed message's facts: from its entry, and from its ticket (read only when
    _needs_ticket says so; None when it is gone since)."""
    at, ticket_id = change.at_ms, change.ticket_id
    out: list[tuple[str, list[Fact]]] = []
    if change.action in OPENING_ACTIONS:
        if change.channel:
            created = Created(change.created_at_ms or at, change.channel)
        elif ticket is not None:  # an entry written before routing recorded these
            created = Created(ticket.created_at_ms or at, ticket.channel)
        else:
            return []
        if change.previous_ticket_id and change.close_reason:
            # Routing closed the previous ticket in the same step (thread limit).
            out.append((change.previous_ticket_id, [StatusTo(at, "closed")]))
        out.append((ticket_id, [created]))
    elif change.action == "reopen":
        out.append((ticket_id, [StatusTo(at, "open")]))
    elif change.action == "append":
        # Routing opens a pending ticket again when the customer writes.
        if change.status_from:
            if change.status_to != change.status_from:
                out.append((ticket_id, [StatusTo(at, change.status_to)]))
        else:  # an entry without statuses: the figures tell
            current = figures.get(ticket_id)
            if current is not None and current.status == "pending":
                out.append((ticket_id, [StatusTo(at, "open")]))
    elif change.action == "csat_answer" and ticket is not None and ticket.csat_rating:
        out.append((ticket_id, [Rated(at, ticket.csat_rating)]))
    return out
