"""The ticket page's update form: what it showed, and what the person changed since.

The form is a snapshot: the live refresh redraws the thread, not the form, and a person may
keep the page open for long. Sending every control as it stands would write the snapshot
back over what others did meanwhile (an agent's status, a tag, a field). So the form carries
what it showed (`shown`, JSON), and only the controls the person changed are written; tags
are changed by what was added and removed, so a tag added meanwhile stays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from multidict import MultiDictProxy

from bridge.core.ticket_fields import FieldDef
from bridge.core.tickets import Status, Ticket
from bridge.web.errors import unprocessable
from bridge.web.workspace.teams_page import fields_from_form

SHOWN_FIELD = "shown"
MAX_SHOWN_CHARS = 64_000


def shown_json(ticket: Ticket) -> str:
    """What the form shows of the ticket, for its hidden `shown` field."""
    return json.dumps({"status": ticket.status.value, "assignee": ticket.assignee,
                       "tags": list(ticket.tags), "group": ticket.group,
                       "fields": ticket.field_values}, ensure_ascii=False)


@dataclass(frozen=True)
class Changes:
    """The update to make (None: that control was not changed)."""

    status: Status | None = None
    assignee: str | None = None
    tags: list[str] | None = None
    group: str | None = None
    fields: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return self == Changes()


def _shown(form: MultiDictProxy[Any], ticket: Ticket) -> dict[str, Any]:
    """What the form showed; a form without it (an older page) is taken to have shown the
    ticket as it is now."""
    raw = form.get(SHOWN_FIELD)
    current: dict[str, Any] = json.loads(shown_json(ticket))
    if not isinstance(raw, str) or len(raw) > MAX_SHOWN_CHARS:
        return current
    try:
        shown = json.loads(raw)
    except (ValueError, RecursionError):  # "[[[[…": too deep for the decoder
        return current
    if not isinstance(shown, dict):
        return current
    return {key: shown.get(key, value) for key, value in current.items()}


def changes(form: MultiDictProxy[Any], ticket: Ticket, definitions: list[FieldDef]
            ) -> Changes:
    """The update the form asks for, against what it showed."""
    shown = _shown(form, ticket)
    raw_status = str(form.get("status", ""))
    try:
        status = Status(raw_status) if raw_status else None
    except ValueError:
        raise unprocessable(f"unknown status {raw_status[:20]!r}") from None
    if status is not None and status.value == shown["status"]:
        status = None
    assignee: str | None = str(form.get("assignee", ""))
    if assignee == shown["assignee"]:
        assignee = None
    # In the order typed (dict keys: each once).
    asked = list(dict.fromkeys(t.strip() for t in str(form.get("tags", "")).split(",")
                               if t.strip()))
    was = {str(t) for t in shown["tags"]} if isinstance(shown["tags"], list) else set()
    tags = None
    if set(asked) != was:
        removed = was - set(asked)
        kept = [t for t in ticket.tags if t not in removed]
        tags = kept + [t for t in asked if t not in was and t not in kept]
    group = str(form["group"]) if "group" in form else None
    if group == shown["group"]:
        group = None
    fields = fields_from_form(definitions, ticket, group, form,
                              shown=shown["fields"] if isinstance(shown["fields"], dict)
                              else None)
    return Changes(status, assignee, tags, group, fields)
