"""Bulk export rows (pure): tickets and thread events as flat records for BI tools, in
NDJSON (one JSON object a line) or CSV (the same columns, lists joined with `;`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from bridge.core.export_events import iso, redact
from bridge.core.tickets import Event, Ticket

TICKET_COLUMNS = ("id", "status", "channel", "contact_id", "assignee", "tags", "created_at",
                  "updated_at", "solved_at", "closed_at", "closed_reason", "session",
                  "message_count", "follow_up_of", "csat_rating", "group", "fields")
EVENT_COLUMNS = ("ticket_id", "id", "type", "at", "author", "body", "delivery", "error_code")
FORMATS = ("ndjson", "csv")


def _time(ms: int) -> str | None:
    return iso(ms) if ms else None


def ticket_row(ticket: Ticket) -> dict[str, Any]:
    return {"id": ticket.id, "status": ticket.status.value, "channel": ticket.channel,
            "contact_id": ticket.contact_id, "assignee": ticket.assignee or None,
            "tags": list(ticket.tags), "created_at": _time(ticket.created_at_ms),
            "updated_at": _time(ticket.updated_at_ms), "solved_at": _time(ticket.solved_at_ms),
            "closed_at": _time(ticket.closed_at_ms),
            "closed_reason": ticket.closed_reason or None, "session": ticket.session.value,
            "message_count": ticket.message_count, "follow_up_of": ticket.follow_up_of or None,
            "csat_rating": ticket.csat_rating or None, "group": ticket.group or None,
            "fields": dict(ticket.field_values)}


def event_row(event: Event, *, anonymize: bool = False) -> dict[str, Any]:
    row = {"ticket_id": event.ticket_id, "id": event.id, "type": event.type.value,
           "at": iso(event.at_ms), "author": event.author, "body": event.body or None,
           "delivery": event.delivery.value if event.delivery else None,
           "error_code": event.error_code or None}
    return redact(row) if anonymize else row


# A cell a spreadsheet would run as a formula (CSV injection) is quoted with a '.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # ticket field values: one JSON object in the cell
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    text = ";".join(str(v) for v in value) if isinstance(value, list) else str(value)
    # Numbers stay numbers (-5 is no formula); text and lists (tags) are guarded.
    if not isinstance(value, int | float) and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def render(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], fmt: str, *,
           header: bool = True) -> str:
    """Rows as NDJSON lines or CSV (with the header line unless `header` is False: the
    later pages of one file)."""
    if fmt == "ndjson":
        return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                       for r in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()
