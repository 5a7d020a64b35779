"""bridge.core.changes: which triggers each change fires (a table), and parsing entries."""

from __future__ import annotations

import pytest

from bridge.core.changes import (
    Change,
    ChangeKind,
    Origin,
    TriggerName,
    delivery_fields,
    failed_with,
    triggers_of,
    update_fields,
)


def routed(action: str, *, prev: str = "", reason: str = "", moved: tuple[str, str] = ("", "")
           ) -> Change:
    fields = {"k": "routed", "t": "7", "c": "c1", "a": action, "e": "1-0"}
    if prev:
        fields["p"] = prev
    if reason:
        fields["r"] = reason
    if moved[0]:
        fields["sf"], fields["st"] = moved
    return Change.from_fields("1700000000000-0", fields)


def updated(origin: Origin, *, status_from: str = "open", status_to: str = "open",
            session_ended: bool = False) -> Change:
    return Change.from_fields("1700000000000-1", update_fields(
        ticket_id="7", contact_id="c1", origin=origin, version=3, status_from=status_from,
        status_to=status_to, session_ended=session_ended))


@pytest.mark.parametrize(("change", "expected"), [
    (routed("new_ticket"), [("7", TriggerName.CREATED)]),
    (routed("follow_up", prev="6"), [("7", TriggerName.CREATED)]),
    (routed("follow_up", prev="6", reason="thread_limit"),
     [("7", TriggerName.CREATED), ("6", TriggerName.CLOSED_THREAD_LIMIT)]),
    (routed("reopen"), [("7", TriggerName.REOPENED)]),  # an entry from before sf/st
    (routed("reopen", moved=("solved", "open")),
     [("7", TriggerName.REOPENED), ("7", TriggerName.STATUS_CHANGED)]),
    (routed("csat_answer"), [("7", TriggerName.CSAT_ANSWERED)]),
    (routed("append"), []),
    (routed("append", moved=("new", "new")), []),
    # The customer's answer opens a pending ticket: a status change like an agent's.
    (routed("append", moved=("pending", "open")), [("7", TriggerName.STATUS_CHANGED)]),
    (updated(Origin.AGENT, status_from="open", status_to="solved"),
     [("7", TriggerName.STATUS_CHANGED)]),
    (updated(Origin.AGENT, session_ended=True), [("7", TriggerName.SESSION_ENDED)]),
    (updated(Origin.AGENT, status_from="open", status_to="solved", session_ended=True),
     [("7", TriggerName.STATUS_CHANGED), ("7", TriggerName.SESSION_ENDED)]),
    (updated(Origin.AGENT), []),  # a note, tags, an assignee: no trigger
    # An automation's or the system's own changes fire nothing: triggers would chain.
    (updated(Origin.AUTOMATION, status_from="solved", status_to="closed"), []),
    (updated(Origin.SYSTEM, session_ended=True), []),
    (Change.from_fields("1-0", delivery_fields(ticket_id="7", contact_id="c1", event_id="2-0",
                                               delivery="failed", error_code="63016")), []),
], ids=lambda v: v.kind.value + ":" + (v.action or v.origin.value) if isinstance(v, Change)
   else None)
def test_triggers_of(change: Change, expected: list[tuple[str, TriggerName]]) -> None:
    assert triggers_of(change) == expected


@pytest.mark.parametrize(("delivery", "code", "expected"), [
    ("failed", "63016", True),
    ("undelivered", "63016", True),
    ("failed", "21610", False),
    ("delivered", "", False),
])
def test_failed_with_a_code(delivery: str, code: str, expected: bool) -> None:
    change = Change.from_fields("5-0", delivery_fields(
        ticket_id="7", contact_id="c1", event_id="2-0", delivery=delivery, error_code=code))
    assert failed_with(change, frozenset({"63016"})) is expected


def test_entries_round_trip_and_name_their_time() -> None:
    change = updated(Origin.AGENT, status_from="pending", status_to="open")
    assert change.kind is ChangeKind.UPDATED
    assert (change.ticket_id, change.contact_id, change.version) == ("7", "c1", 3)
    assert (change.status_from, change.status_to) == ("pending", "open")
    assert change.at_ms == 1700000000000


# Every field an entry can carry, the attribute it fills, and a value no other field has
# (from_fields builds the named tuple positionally: a field in the wrong place fails here).
_EVERY_FIELD = [
    ("t", "ticket_id", "t-7", "t-7"),
    ("c", "contact_id", "c-1", "c-1"),
    ("e", "event_id", "9-3", "9-3"),
    ("v", "version", "41", 41),
    ("a", "action", "a-x", "a-x"),
    ("p", "previous_ticket_id", "p-6", "p-6"),
    ("r", "close_reason", "r-x", "r-x"),
    ("sf", "status_from", "sf-x", "sf-x"),
    ("st", "status_to", "st-x", "st-x"),
    ("o", "origin", "agent", Origin.AGENT),
    ("se", "session_ended", "1", True),
    ("op", "op", "op-x", "op-x"),
    ("ev", "event_types", "n1,,n2", ("n1", "n2")),
    ("as", "assignee", "as-x", "as-x"),
    ("tg", "tags_changed", "1", True),
    ("d", "delivery", "d-x", "d-x"),
    ("ec", "error_code", "ec-x", "ec-x"),
    ("ch", "channel", "ch-x", "ch-x"),
    ("ca", "created_at_ms", "1700000000999", 1700000000999),
    ("pf", "previous_status", "pending", "pending"),
    ("ah", "holder", "ah-x", "ah-x"),
]


def test_every_field_lands_in_its_own_attribute() -> None:
    fields = {"k": "delivery", "future": "ignored"} | {key: raw for key, _, raw, _ in _EVERY_FIELD}
    change = Change.from_fields("1700000000123-4", fields)
    assert (change.log_id, change.kind, change.at_ms) == (
        "1700000000123-4", ChangeKind.DELIVERY, 1700000000123)
    assert {attr: getattr(change, attr) for _, attr, _, _ in _EVERY_FIELD} == {
        attr: parsed for _, attr, _, parsed in _EVERY_FIELD}
    assert set(Change._fields) == {"log_id", "kind", "at_ms"} | {a for _, a, _, _ in _EVERY_FIELD}


def test_absent_optional_fields_take_their_defaults() -> None:
    change = Change.from_fields("5-0", {"k": "routed", "t": "7", "c": "c1"})
    assert change == Change(log_id="5-0", kind=ChangeKind.ROUTED, ticket_id="7",
                            contact_id="c1", at_ms=5)
    assert (change.origin, change.assignee, change.event_types, change.version) == (
        Origin.SYSTEM, None, (), 0)


def test_an_unknown_origin_is_refused() -> None:
    with pytest.raises(ValueError, match="origin"):
        Change.from_fields("1-0", {"k": "updated", "t": "7", "c": "c1", "o": "martian"})


@pytest.mark.parametrize("missing", ["k", "t", "c"])
def test_an_entry_without_its_required_fields_is_refused(missing: str) -> None:
    fields = {"k": "routed", "t": "7", "c": "c1", "a": "append"}
    del fields[missing]
    with pytest.raises(ValueError, match=repr(missing)):
        Change.from_fields("1-0", fields)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        Change.from_fields("1-0", {"k": "exploded", "t": "7", "c": "c1"})


def test_only_triggers_something_can_act_on_get_a_job() -> None:
    """With the shipped rules a new conversation needs no worker (no rule listens to
    ticket.created, no automation sets a timer for a new ticket); a solve does (the survey,
    the close timers); a rule on ticket.created brings its job back."""
    from bridge.core.rule_model import Conditions, RuleActions, Trigger
    from bridge.core.rule_parsing import load_config
    from config.settings import DEFAULT_CONFIG_DIR
    from workers.relay import jobs_for

    shipped = load_config(DEFAULT_CONFIG_DIR / "automations.toml")
    created = routed("new_ticket")
    solved = updated(Origin.AGENT, status_from="open", status_to="solved")
    thread_limit = routed("follow_up", prev="6", reason="thread_limit")
    assert [j.payload["trigger"] for j in jobs_for([created, solved, thread_limit], shipped)
            ] == ["ticket.status_changed", "ticket.closed_thread_limit"]
    # Without the rules (tests, tools), every trigger is handed on.
    assert len(jobs_for([created, solved], None)) == 2
    greeting = Trigger(name="greet", on=frozenset({"ticket.created"}), when=Conditions(),
                       then=RuleActions(add_tags=("greeted",)))
    with_greeting = type(shipped)(general=shipped.general, csat=shipped.csat,
                                  triggers=(*shipped.triggers, greeting),
                                  automations=shipped.automations)
    assert [j.payload["trigger"] for j in jobs_for([created], with_greeting)] == [
        "ticket.created"]
