"""Ticket statuses, session states and the transitions an agent may make."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    HOLD = "hold"
    SOLVED = "solved"
    CLOSED = "closed"


class SessionState(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class Aging(StrEnum):
    OK = "ok"
    YELLOW = "yellow"
    RED = "red"


# Zendesk's order; "unsolved" means strictly before solved.
STATUS_ORDER: tuple[Status, ...] = tuple(Status)
UNSOLVED: frozenset[Status] = frozenset({Status.NEW, Status.OPEN, Status.PENDING, Status.HOLD})


class TransitionError(ValueError):
    """An agent asked for a status change the ticket model forbids."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_transition(current: Status, requested: Status) -> None:
    """Raise TransitionError unless an agent may move a ticket from current to requested.

    `new` is never re-entered once left, and `closed` is final.
    """
    if current is Status.CLOSED:
        raise TransitionError("ticket_closed", "a closed ticket cannot change")
    if requested is Status.NEW and current is not Status.NEW:
        raise TransitionError("invalid_transition", "a ticket never goes back to new")


def aging(status: Status, age_s: float, *, yellow_after_s: int, red_after_s: int) -> Aging:
    """Flag unsolved tickets by age; solved and closed tickets are never flagged."""
    if status not in UNSOLVED:
        return Aging.OK
    if age_s >= red_after_s:
        return Aging.RED
    if age_s >= yellow_after_s:
        return Aging.YELLOW
    return Aging.OK


class EventType(StrEnum):
    CUSTOMER_MESSAGE = "customer_message"
    AGENT_REPLY = "agent_reply"
    NOTE = "note"
    STATUS_CHANGED = "status_changed"
    SESSION_ENDED = "session_ended"
    MACRO_APPLIED = "macro_applied"
    CSAT_SENT = "csat_sent"
    CSAT_ANSWERED = "csat_answered"
    AUTOMATION = "automation"
    TICKET_UPDATED = "ticket_updated"
    FOLLOW_UP_CREATED = "follow_up_created"


# Events that go out to the customer and carry a delivery state.
OUTBOUND_EVENTS: frozenset[EventType] = frozenset(
    {EventType.AGENT_REPLY, EventType.MACRO_APPLIED, EventType.CSAT_SENT, EventType.AUTOMATION}
)


class Delivery(StrEnum):
    """Outbound delivery states; they only move forward, failed/undelivered are terminal."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


_DELIVERY_RANK = {
    Delivery.QUEUED: 0,
    Delivery.SENDING: 1,
    Delivery.SENT: 2,
    Delivery.DELIVERED: 3,
    Delivery.READ: 4,
}
TERMINAL_DELIVERY: frozenset[Delivery] = frozenset({Delivery.FAILED, Delivery.UNDELIVERED})

# Twilio's own status words, mapped onto ours.
TWILIO_DELIVERY: dict[str, Delivery] = {
    "accepted": Delivery.QUEUED,
    "scheduled": Delivery.QUEUED,
    "queued": Delivery.QUEUED,
    "sending": Delivery.SENDING,
    "sent": Delivery.SENT,
    "delivered": Delivery.DELIVERED,
    "read": Delivery.READ,
    "undelivered": Delivery.UNDELIVERED,
    "failed": Delivery.FAILED,
    "canceled": Delivery.FAILED,
}


def delivery_advances(current: Delivery | None, new: Delivery) -> bool:
    """True when a status callback moves a message forward (never backward, never out of
    a terminal state)."""
    if current is None:
        return True
    if current in TERMINAL_DELIVERY or current == new:
        return False
    if new in TERMINAL_DELIVERY:
        return True
    return _DELIVERY_RANK[new] > _DELIVERY_RANK[current]


@dataclass(frozen=True, kw_only=True)
class Contact:
    id: str
    channel: str
    address: str
    name: str = ""
    wa_id: str = ""
    external_user_id: str = ""
    locale: str = ""
    window_until_ms: int = 0
    opted_out: bool = False

    def window_open(self, now_ms: int) -> bool:
        """Inside WhatsApp's 24-hour customer-service window."""
        return now_ms < self.window_until_ms


@dataclass(frozen=True, kw_only=True)
class Ticket:
    id: str
    contact_id: str
    channel: str
    status: Status
    created_at_ms: int
    updated_at_ms: int
    session: SessionState = SessionState.ACTIVE
    session_ended_reason: str = ""
    assignee: str = ""
    tags: tuple[str, ...] = ()
    solved_at_ms: int = 0
    closed_at_ms: int = 0
    closed_reason: str = ""
    message_count: int = 0
    follow_up_of: str = ""
    follow_ups: tuple[str, ...] = ()
    version: int = 0
    csat_rating: int = 0
    csat_sent_at_ms: int = 0
    # The agents' group the ticket belongs to ("" : the shared pool) and its ticket field
    # values (bridge/core/ticket_fields.py), stored as JSON under "fields".
    group: str = ""
    field_values: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Ticket:
        """Build from the store's flat string fields (the Redis hash). Every list page,
        report and relay batch builds many: empty JSON fields are not parsed, and the
        enums are looked up in dicts (an Enum call costs a microsecond)."""
        get = fields.get
        return cls(
            id=fields["id"],
            contact_id=fields["contact_id"],
            channel=fields["channel"],
            status=_member(_STATUSES, fields["status"], "status"),
            created_at_ms=int(fields["created_at_ms"]),
            updated_at_ms=int(get("updated_at_ms") or fields["created_at_ms"]),
            session=_member(_SESSIONS, get("session") or SessionState.ACTIVE.value, "session"),
            session_ended_reason=get("session_ended_reason", ""),
            assignee=get("assignee", ""),
            tags=_json_tuple(get("tags")),
            solved_at_ms=int(get("solved_at_ms") or 0),
            closed_at_ms=int(get("closed_at_ms") or 0),
            closed_reason=get("closed_reason", ""),
            message_count=int(get("message_count") or 0),
            follow_up_of=get("follow_up_of", ""),
            follow_ups=_json_tuple(get("follow_ups")),
            version=int(get("version") or 0),
            csat_rating=int(get("csat_rating") or 0),
            csat_sent_at_ms=int(get("csat_sent_at_ms") or 0),
            group=get("group", ""),
            field_values=json.loads(raw) if (raw := get("fields")) and raw != "{}" else {},
        )

    def age_s(self, now_ms: int) -> float:
        return max(0, now_ms - self.created_at_ms) / 1000


_STATUSES = {status.value: status for status in Status}
_SESSIONS = {state.value: state for state in SessionState}


def _member(members: dict[str, _E], value: str, name: str) -> _E:
    """members[value], or the ValueError the Enum call would raise."""
    try:
        return members[value]
    except KeyError:
        raise ValueError(f"{value!r} is not a valid ticket {name}") from None


def _json_tuple(raw: str | None) -> tuple[str, ...]:
    return tuple(json.loads(raw)) if raw and raw != "[]" else ()


@dataclass(frozen=True, kw_only=True)
class Event:
    id: str
    ticket_id: str
    type: EventType
    at_ms: int
    author: str
    body: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    delivery: Delivery | None = None
    error_code: str = ""
    error_message: str = ""


TAG_MAX = 50
_TAG_RE = re.compile(r"^[\w:-]{1,64}$")


def normalize_tags(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Zendesk-like tags: lower case, no spaces, unique, at most TAG_MAX."""
    out: list[str] = []
    for tag in tags:
        norm = tag.strip().lower()
        if not _TAG_RE.match(norm):
            shown = tag if len(tag) <= 80 else tag[:80] + "…"  # an error is no echo chamber
            raise TransitionError("invalid_tag",
                                  f"tag {shown!r} must be 1-64 letters, digits, _ : -")
        if norm not in out:
            out.append(norm)
    if len(out) > TAG_MAX:
        raise TransitionError("too_many_tags", f"at most {TAG_MAX} tags")
    return tuple(out)
