"""Export events: what a ticket change looks like to a webhook receiver (pure).

A change log entry (bridge.core.changes.Change) and the thread events it recorded become
zero or more export events, each with a webhook-id derived from the change, so every retry
and every replay of one event carries the same id (Standard Webhooks receivers dedupe on
it). The payload follows the Standard Webhooks shape `{"type", "timestamp", "data"}` plus a
`schema_version`; `redact` takes the personal data out for endpoints that ask for it
(aggregators that must receive anonymised data).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bridge.core.changes import OPENING_ACTIONS, Change, ChangeKind
from bridge.core.tickets import OUTBOUND_EVENTS, Contact, Event, EventType

# Bumped when a payload loses or renames a field (adding one is not a new version).
SCHEMA_VERSION = 1


class ExportEventType(StrEnum):
    TICKET_CREATED = "ticket.created"
    TICKET_STATUS_CHANGED = "ticket.status_changed"
    TICKET_ASSIGNED = "ticket.assigned"
    TICKET_TAGGED = "ticket.tagged"
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DELIVERY_STATUS_CHANGED = "message.delivery_status_changed"
    NOTE_ADDED = "note.added"
    SESSION_ENDED = "session.ended"
    CSAT_ANSWERED = "csat.answered"


ALL_EVENTS = "*"
EXPORT_EVENT_TYPES: frozenset[str] = frozenset(t.value for t in ExportEventType)


@dataclass(frozen=True)
class ExportItem:
    """One export event, before it is addressed to an endpoint."""

    webhook_id: str
    ticket_id: str
    type: ExportEventType
    at_ms: int
    data: dict[str, Any] = field(default_factory=dict)


def iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def webhook_id(change: Change, index: int) -> str:
    """Stable across retries and replays: the change's ticket and log entry (a stream id is
    unique within its partition only; the ticket pins the partition) and the event's place
    among the change's export events."""
    return f"evt_{change.ticket_id}_{change.log_id}_{index}"


def _event_json(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"id": event.id, "type": event.type.value, "at": iso(event.at_ms),
                           "author": event.author}
    if event.body:
        out["body"] = event.body
    for name in ("media", "location", "button_payload", "button_text", "message_type",
                 "macro", "rating"):
        if name in event.data:
            out[name] = event.data[name]
    return out


def _ticket_created(change: Change, contact: Contact | None) -> dict[str, Any]:
    return {
        "ticket": {"id": change.ticket_id, "status": "new",
                   "channel": contact.channel if contact else None,
                   "follow_up_of": (change.previous_ticket_id
                                    if change.action == "follow_up" else None)},
        "contact": {"id": change.contact_id,
                    "address": contact.address if contact else None,
                    "name": (contact.name or None) if contact else None},
    }


def _base(change: Change, ticket_id: str = "") -> dict[str, Any]:
    return {"ticket": {"id": ticket_id or change.ticket_id},
            "contact": {"id": change.contact_id}}


def export_items(change: Change, events: Sequence[Event],
                 contact: Contact | None = None) -> list[ExportItem]:
    """The export events of one change, in the order a receiver should see them.

    `events` are the thread events the change recorded (TicketStore.events_of_change);
    `contact` is read for openings only (the new ticket's channel and address)."""
    drafts: list[tuple[ExportEventType, str, dict[str, Any]]] = []
    if change.kind is ChangeKind.ROUTED:
        drafts += _routed(change, events, contact)
    elif change.kind is ChangeKind.UPDATED:
        drafts += _updated(change, events)
    elif change.kind is ChangeKind.DELIVERY:
        data = _base(change)
        data["message"] = {"id": change.event_id}
        data["delivery"] = {"state": change.delivery, "error_code": change.error_code or None}
        drafts.append((ExportEventType.MESSAGE_DELIVERY_STATUS_CHANGED, "", data))
    return [ExportItem(webhook_id(change, i), ticket_id or change.ticket_id, etype,
                       change.at_ms, data)
            for i, (etype, ticket_id, data) in enumerate(drafts)]


def _routed(change: Change, events: Sequence[Event], contact: Contact | None
            ) -> list[tuple[ExportEventType, str, dict[str, Any]]]:
    out: list[tuple[ExportEventType, str, dict[str, Any]]] = []
    if change.close_reason and change.previous_ticket_id:
        data = _base(change, change.previous_ticket_id)
        data["status"] = {"from": change.previous_status or None, "to": "closed",
                          "reason": change.close_reason}
        out.append((ExportEventType.TICKET_STATUS_CHANGED, change.previous_ticket_id, data))
    if change.action in OPENING_ACTIONS:
        out.append((ExportEventType.TICKET_CREATED, "", _ticket_created(change, contact)))
    for event in events:
        data = _base(change)
        if event.type is EventType.CSAT_ANSWERED:
            data["csat"] = {"rating": event.data.get("rating"), "event": _event_json(event)}
            out.append((ExportEventType.CSAT_ANSWERED, event.ticket_id, data))
        elif event.type is EventType.CUSTOMER_MESSAGE:
            data["message"] = _event_json(event)
            out.append((ExportEventType.MESSAGE_RECEIVED, "", data))
    # The customer's message moved the ticket: solved -> open (a reopen), pending -> open.
    if change.status_from and change.status_to and change.status_from != change.status_to:
        data = _base(change)
        data["status"] = {"from": change.status_from, "to": change.status_to,
                          "reason": "customer_message"}
        out.append((ExportEventType.TICKET_STATUS_CHANGED, "", data))
    return out


def _updated(change: Change, events: Sequence[Event]
             ) -> list[tuple[ExportEventType, str, dict[str, Any]]]:
    out: list[tuple[ExportEventType, str, dict[str, Any]]] = []
    for event in events:
        info = event.data
        if event.type in (EventType.STATUS_CHANGED, EventType.TICKET_UPDATED,
                          EventType.SESSION_ENDED):
            # One update's event carries every field it changed.
            if "from" in info and "to" in info:
                data = _base(change)
                data["status"] = {"from": info["from"], "to": info["to"], "reason": None}
                data["author"] = event.author
                out.append((ExportEventType.TICKET_STATUS_CHANGED, "", data))
            if "assignee" in info:
                data = _base(change)
                data["assignee"] = info["assignee"] or None
                data["author"] = event.author
                out.append((ExportEventType.TICKET_ASSIGNED, "", data))
            if "tags" in info:
                data = _base(change)
                data["tags"] = list(info["tags"])
                data["author"] = event.author
                out.append((ExportEventType.TICKET_TAGGED, "", data))
            if event.type is EventType.SESSION_ENDED:
                data = _base(change)
                data["session"] = {"state": "ended", "reason": info.get("reason")}
                data["author"] = event.author
                out.append((ExportEventType.SESSION_ENDED, "", data))
        elif event.type is EventType.NOTE:
            data = _base(change)
            data["note"] = _event_json(event)
            out.append((ExportEventType.NOTE_ADDED, "", data))
        elif event.type in OUTBOUND_EVENTS:
            data = _base(change)
            data["message"] = _event_json(event)
            out.append((ExportEventType.MESSAGE_SENT, "", data))
    return out


# ------------------------------------------------------------------ addressing


def subscribed(events: Iterable[str], etype: str) -> bool:
    """An endpoint's `events` list admits this type (`*`: every type)."""
    return any(e in (ALL_EVENTS, etype) for e in events)


def check_event_filter(events: object) -> tuple[str, ...]:
    """An endpoint's `events` as the API takes it: a non-empty list of known types or `*`.
    Raises ValueError naming what is wrong."""
    if not isinstance(events, list) or not events:
        raise ValueError("events must be a non-empty list of event types (or [\"*\"])")
    out: list[str] = []
    for item in events:
        if not isinstance(item, str) or (item != ALL_EVENTS and item not in EXPORT_EVENT_TYPES):
            raise ValueError(f"unknown event type {str(item)[:64]!r}; known: "
                             f"{', '.join(sorted(EXPORT_EVENT_TYPES))} or *")
        if item not in out:
            out.append(item)
    return tuple(out)


# Fields that are personal data wherever they appear: message and note bodies, button
# texts, media links (Twilio's media URLs open the customer's pictures), locations, the
# customer's address (a phone number) and profile name.
PERSONAL_KEYS = frozenset({"body", "button_text", "button_payload", "media", "location",
                           "address", "name"})


def redact(value: Any) -> Any:
    """A copy of a payload's data without personal data: those fields become null, so a
    receiver's schema stays the same whether it gets anonymised data or not."""
    if isinstance(value, dict):
        return {k: (None if k in PERSONAL_KEYS else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return copy.copy(value)


def anonymized_body(body: str) -> str:
    """A queued delivery's JSON body without personal data. The sender applies it to
    whatever it sends to an endpoint that asks for anonymised data: a delivery queued
    before the endpoint asked, a retry of one or a replay otherwise went out with the
    personal data it was queued with. Redacting twice changes nothing."""
    parsed = json.loads(body)
    if isinstance(parsed, dict) and "data" in parsed:
        parsed["data"] = redact(parsed["data"])
    return json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))


def payload(item: ExportItem, *, anonymize: bool) -> dict[str, Any]:
    """The JSON body of one delivery (Standard Webhooks' recommended shape)."""
    return {"type": item.type.value, "timestamp": iso(item.at_ms),
            "schema_version": SCHEMA_VERSION,
            "data": redact(item.data) if anonymize else item.data}
