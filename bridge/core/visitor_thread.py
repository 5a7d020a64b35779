"""The conversation as a widget visitor sees it: every ticket of the contact in one order,
and only what is meant for the visitor (no notes, no internal changes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bridge.core.changes import Change, ChangeKind
from bridge.core.tickets import Delivery, Event, EventType

# "<event stream id>_<ticket id>".
_EVENT_KEY = re.compile(r"([0-9]{1,15})-([0-9]{1,10})_([0-9]{1,15})")

# Events of another ticket may carry a slightly smaller stream id than one already seen
# (two streams' ids taken in the same millisecond, a clock step): readers look back this
# far behind their cursor and drop what they already have, so nothing falls between.
LOOK_BACK_MS = 2000


@dataclass(frozen=True, order=True)
class EventKey:
    """Orders every event of a contact's tickets: stream id (Redis time, one clock for the
    contact's slot), then ticket id for a tie."""

    ms: int
    seq: int
    ticket_id: int

    @property
    def event_id(self) -> str:
        return f"{self.ms}-{self.seq}"

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}_{self.ticket_id}"

    @classmethod
    def of(cls, ticket_id: str, event_id: str) -> EventKey:
        ms, _, seq = event_id.partition("-")
        return cls(int(ms), int(seq or 0), int(ticket_id))

    @classmethod
    def parse(cls, raw: str) -> EventKey:
        match = _EVENT_KEY.fullmatch(raw)
        if not match:
            raise ValueError("not an event key (<ms>-<seq>_<ticket>)")
        return cls(int(match[1]), int(match[2]), int(match[3]))


# Agent-side events the visitor sees; notes, tags and assignments stay inside.
_AGENT_TEXT = frozenset({EventType.AGENT_REPLY, EventType.MACRO_APPLIED, EventType.AUTOMATION})
# What the visitor's read position marks `read`.
READABLE = frozenset({*_AGENT_TEXT, EventType.CSAT_SENT})


def visitor_view(event: Event) -> dict[str, Any] | None:
    """The event as the widget shows it, or None for what the visitor must not see."""
    base: dict[str, Any] = {"key": str(EventKey.of(event.ticket_id, event.id)),
                            "at_ms": event.at_ms}
    # The widget's own id for the visitor's message: a tab replaces its pending copy.
    client_id = str(event.data.get("provider_id", "")).removeprefix("widget:")
    if event.type is EventType.CUSTOMER_MESSAGE:
        return {**base, "type": "visitor", "body": event.body, "client_id": client_id}
    if event.delivery in (Delivery.FAILED, Delivery.UNDELIVERED):
        return None
    if event.type in _AGENT_TEXT and event.body:
        return {**base, "type": "agent", "body": event.body,
                "read": event.delivery is Delivery.READ}
    if event.type is EventType.CSAT_SENT:
        buttons = [{"id": str(b.get("id", "")), "title": str(b.get("title", ""))}
                   for b in event.data.get("buttons", []) if isinstance(b, dict)]
        return {**base, "type": "csat", "body": event.body, "buttons": buttons}
    if event.type is EventType.CSAT_ANSWERED:
        return {**base, "type": "csat_answered", "rating": event.data.get("rating"),
                "client_id": client_id}
    if event.type is EventType.SESSION_ENDED:
        return {**base, "type": "ended"}
    return None


# The event types a visitor sees (visitor_view shows them, given a body where it needs one).
VISIBLE = frozenset({EventType.CUSTOMER_MESSAGE, *_AGENT_TEXT, EventType.CSAT_SENT,
                     EventType.CSAT_ANSWERED, EventType.SESSION_ENDED})
_VISIBLE_VALUES = frozenset(t.value for t in VISIBLE)


def concerns_visitor(change: Change) -> bool:
    """Whether a change can add to what the visitor sees, so their widget reads the thread
    again. Delivery moves do not (the worker's `sent`, the visitor's own `read`: a reply
    shows once recorded), nor updates that recorded only inside events (notes, tags,
    assignments, status changes). An update that does not name its events (a writer from
    before they were named) is read again, to be safe."""
    if change.kind is ChangeKind.DELIVERY:
        return False
    if change.kind is ChangeKind.UPDATED and change.event_types:
        return not _VISIBLE_VALUES.isdisjoint(change.event_types)
    return True
