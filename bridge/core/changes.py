"""Ticket changes as the change log records them, and the triggers each change fires.

Every change to a ticket (a routing decision, an agent's or an automation's update, a
delivery status) is written to the change log in the same atomic step as the change itself
(bridge/store/changelog.py). The relay (workers/relay.py) reads the log and hands each
change to its consumers; this module decides, once, which triggers a change fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple


class TriggerName(StrEnum):
    """Ticket events that trigger rules (`on = [...]` in config/automations.toml) react to."""

    CREATED = "ticket.created"
    STATUS_CHANGED = "ticket.status_changed"
    SESSION_ENDED = "ticket.session_ended"
    CLOSED_THREAD_LIMIT = "ticket.closed_thread_limit"
    REOPENED = "ticket.reopened"
    CSAT_ANSWERED = "ticket.csat_answered"


class ChangeKind(StrEnum):
    ROUTED = "routed"  # an inbound message was routed (bridge/store/route.lua)
    UPDATED = "updated"  # an agent, macro or automation changed the ticket
    DELIVERY = "delivery"  # an outbound message's delivery state moved forward


class Origin(StrEnum):
    """Who made an update. Only changes made by people fire triggers: an automation's own
    changes (a trigger that solves, a timer that closes) would otherwise chain triggers."""

    AGENT = "agent"
    AUTOMATION = "automation"
    SYSTEM = "system"


class Change(NamedTuple):
    """One change log entry. `log_id` is its stream id (milliseconds-sequence), which
    orders the changes of one contact, so of one ticket.

    A named tuple, not a frozen dataclass: as immutable (the relay hands the same object
    to every consumer), and built at a quarter of the cost. The relay builds one for
    every message the bridge routes; with twenty fields a frozen dataclass's __init__
    (one object.__setattr__ each) was half of parsing an entry."""

    log_id: str
    kind: ChangeKind
    ticket_id: str
    contact_id: str
    at_ms: int
    event_id: str = ""
    version: int = 0
    # ROUTED: the routing action; the previous ticket and why it was closed, if any.
    action: str = ""
    previous_ticket_id: str = ""
    close_reason: str = ""
    # UPDATED, and ROUTED to the current ticket (append, reopen): the status before and
    # after (equal when it did not change; both "" in entries written before routing
    # recorded them).
    status_from: str = ""
    status_to: str = ""
    # UPDATED
    origin: Origin = Origin.SYSTEM
    session_ended: bool = False
    # The update's attempt token, also written on each event it recorded (so a consumer
    # finds them), and those events' types (bridge.core.tickets.EventType values).
    op: str = ""
    event_types: tuple[str, ...] = ()
    # The new assignee when the update changed it ("" when it unassigned), else None.
    assignee: str | None = None
    tags_changed: bool = False
    # DELIVERY
    delivery: str = ""
    error_code: str = ""
    # ROUTED openings (new_ticket, follow_up): the new ticket's channel and creation time
    # ("" and 0 in entries written before routing recorded them).
    channel: str = ""
    created_at_ms: int = 0
    # ROUTED follow_up closing the previous ticket (thread limit): that ticket's status
    # before it closed ("" in entries written before routing recorded it).
    previous_status: str = ""
    # UPDATED with a status change: who held the ticket once it was made ("" : nobody;
    # None in entries written before updates recorded it). Reports credit a solve to
    # them; the ticket read later may have changed hands.
    holder: str | None = None

    @classmethod
    def from_fields(cls, log_id: str, fields: Mapping[str, str]) -> Change:
        """Parse a log entry's fields; unknown fields are ignored (a newer writer may add
        some), a missing required one or an unknown kind or origin raises ValueError."""
        # The relay parses every change of every message (thousands a second under load):
        # the enums are looked up in plain dicts (an Enum call costs a microsecond).
        get = fields.get
        try:
            raw_kind = fields["k"]
            ticket_id = fields["t"]
            contact_id = fields["c"]
        except KeyError as exc:
            raise ValueError(f"change {log_id}: missing field {exc.args[0]!r}") from None
        kind = _KINDS.get(raw_kind)
        if kind is None:
            raise ValueError(f"change {log_id}: unknown kind {raw_kind!r}")
        origin = _ORIGINS.get(get("o") or Origin.SYSTEM.value)
        if origin is None:
            raise ValueError(f"change {log_id}: unknown origin {get('o')!r}")
        ms, _, _ = log_id.partition("-")
        event_types = get("ev")
        # Positional, in field order (keywords cost as much as the dataclass did);
        # tests/test_changes_core.py sets every field to a value of its own and reads it back.
        return cls(
            log_id,
            kind,
            ticket_id,
            contact_id,
            int(ms),
            get("e", ""),  # event_id
            int(get("v") or 0),  # version
            get("a", ""),  # action
            get("p", ""),  # previous_ticket_id
            get("r", ""),  # close_reason
            get("sf", ""),  # status_from
            get("st", ""),  # status_to
            origin,
            get("se") == "1",  # session_ended
            get("op", ""),  # op
            tuple(filter(None, event_types.split(","))) if event_types else (),
            get("as"),  # assignee
            get("tg") == "1",  # tags_changed
            get("d", ""),  # delivery
            get("ec", ""),  # error_code
            get("ch", ""),  # channel
            int(get("ca") or 0),  # created_at_ms
            get("pf", ""),  # previous_status
            get("ah"),  # holder
        )


_KINDS = {kind.value: kind for kind in ChangeKind}
_ORIGINS = {origin.value: origin for origin in Origin}


def update_fields(*, ticket_id: str, contact_id: str, origin: Origin, version: int,
                  status_from: str = "", status_to: str = "",
                  session_ended: bool = False, op: str = "",
                  event_types: tuple[str, ...] = (), assignee: str | None = None,
                  tags_changed: bool = False, holder: str = "") -> dict[str, str]:
    """The log entry of an update, as the store writes it (kept beside from_fields so the
    two spellings cannot drift). The events it recorded are not named by id (their ids are
    only known once the transaction ran) but by the update's `op` token, which each of them
    carries, and by type; the entry's own id identifies the change."""
    fields = {"k": ChangeKind.UPDATED.value, "t": ticket_id, "c": contact_id,
              "o": origin.value, "v": str(version)}
    if status_from != status_to:
        fields["sf"], fields["st"], fields["ah"] = status_from, status_to, holder
    if session_ended:
        fields["se"] = "1"
    if op:
        fields["op"] = op
    if event_types:
        fields["ev"] = ",".join(event_types)
    if assignee is not None:
        fields["as"] = assignee
    if tags_changed:
        fields["tg"] = "1"
    return fields


def delivery_fields(*, ticket_id: str, contact_id: str, event_id: str, delivery: str,
                    error_code: str = "") -> dict[str, str]:
    fields = {"k": ChangeKind.DELIVERY.value, "t": ticket_id, "c": contact_id,
              "e": event_id, "d": delivery}
    if error_code:
        fields["ec"] = error_code
    return fields


# The routing actions (bridge.core.routing.Action values) that open a ticket.
OPENING_ACTIONS = frozenset({"new_ticket", "follow_up"})


def triggers_of(change: Change) -> list[tuple[str, TriggerName]]:
    """The (ticket id, trigger) pairs a change fires, in the order they are handed on."""
    if change.kind is ChangeKind.ROUTED:
        if change.action in OPENING_ACTIONS:
            fired = [(change.ticket_id, TriggerName.CREATED)]
            if change.close_reason == "thread_limit" and change.previous_ticket_id:
                fired.append((change.previous_ticket_id, TriggerName.CLOSED_THREAD_LIMIT))
            return fired
        if change.action == "csat_answer":
            return [(change.ticket_id, TriggerName.CSAT_ANSWERED)]
        fired = []
        if change.action == "reopen":
            fired.append((change.ticket_id, TriggerName.REOPENED))
        # The customer's message moved the ticket (pending or solved -> open): a status
        # change like an agent's, for the rules listening to ticket.status_changed.
        if change.status_from and change.status_to and change.status_from != change.status_to:
            fired.append((change.ticket_id, TriggerName.STATUS_CHANGED))
        return fired
    if change.kind is ChangeKind.UPDATED and change.origin is Origin.AGENT:
        fired = []
        if change.status_from and change.status_to and change.status_from != change.status_to:
            fired.append((change.ticket_id, TriggerName.STATUS_CHANGED))
        if change.session_ended:
            fired.append((change.ticket_id, TriggerName.SESSION_ENDED))
        return fired
    return []


def failed_with(change: Change, codes: frozenset[str]) -> bool:
    """A delivery change to failed/undelivered with one of the channel's error codes (the
    channel adapter names the codes: the relay asks for Twilio's 63016)."""
    return (change.kind is ChangeKind.DELIVERY and change.delivery in ("failed", "undelivered")
            and change.error_code in codes)


# The ticket's status after the event, where the trigger alone tells it.
_STATUS_AFTER = {
    TriggerName.CREATED: "new",
    TriggerName.REOPENED: "open",
    TriggerName.CLOSED_THREAD_LIMIT: "closed",
}


def status_after(change: Change, trigger: TriggerName) -> str | None:
    """The ticket's status once the change is made, when the change says it (None: not
    known without reading the ticket)."""
    if trigger in _STATUS_AFTER:
        return _STATUS_AFTER[trigger]
    if change.kind in (ChangeKind.UPDATED, ChangeKind.ROUTED) and change.status_to:
        return change.status_to
    return None
