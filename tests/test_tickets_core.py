"""Pure ticket rules: transitions, aging, delivery ordering, tags, stored fields."""

from __future__ import annotations

import itertools

import pytest

from bridge.core.tickets import (
    OUTBOUND_EVENTS,
    STATUS_ORDER,
    TAG_MAX,
    TERMINAL_DELIVERY,
    TWILIO_DELIVERY,
    UNSOLVED,
    Aging,
    Contact,
    Delivery,
    EventType,
    SessionState,
    Status,
    Ticket,
    TransitionError,
    aging,
    check_transition,
    delivery_advances,
    normalize_tags,
)


def test_status_order_is_zendesks() -> None:
    assert [s.value for s in STATUS_ORDER] == ["new", "open", "pending", "hold", "solved",
                                               "closed"]
    assert frozenset({Status.NEW, Status.OPEN, Status.PENDING, Status.HOLD}) == UNSOLVED


# ---------------------------------------------------------------- transitions


# Written from DESIGN §1, not from check_transition: statuses new < open < pending < hold <
# solved < closed; `new` is never re-entered once left; `closed` is final (nothing reopens
# it). Anything else an agent may do, backwards included (solved -> open reopens).
# Rows: the current status; columns: the requested one.
#   ok: allowed   back-to-new: refused, invalid_transition   final: refused, ticket_closed
TRANSITIONS = """
            new          open   pending  hold   solved  closed
new         ok           ok     ok       ok     ok      ok
open        back-to-new  ok     ok       ok     ok      ok
pending     back-to-new  ok     ok       ok     ok      ok
hold        back-to-new  ok     ok       ok     ok      ok
solved      back-to-new  ok     ok       ok     ok      ok
closed      final        final  final    final  final   final
"""
ERROR_CODES = {"ok": None, "back-to-new": "invalid_transition", "final": "ticket_closed"}


def transition_table() -> dict[tuple[str, str], str | None]:
    header, *rows = [line.split() for line in TRANSITIONS.strip().splitlines()]
    table: dict[tuple[str, str], str | None] = {}
    for current, *cells in rows:
        assert len(cells) == len(header), current
        for requested, cell in zip(header, cells, strict=True):
            table[current, requested] = ERROR_CODES[cell]
    return table


def test_the_table_covers_every_pair_of_statuses() -> None:
    assert set(transition_table()) == {(a.value, b.value) for a in Status for b in Status}


@pytest.mark.parametrize(("current", "requested"), list(itertools.product(Status, Status)))
def test_check_transition(current: Status, requested: Status) -> None:
    code = transition_table()[current.value, requested.value]
    if code is None:
        check_transition(current, requested)
    else:
        with pytest.raises(TransitionError) as info:
            check_transition(current, requested)
        assert info.value.code == code
        assert info.value.message and str(info.value) == info.value.message


def test_transition_error_is_a_value_error() -> None:
    assert issubclass(TransitionError, ValueError)


# ---------------------------------------------------------------- aging

YELLOW, RED = 18 * 3600, 24 * 3600


@pytest.mark.parametrize(
    ("status", "age_s", "expected"),
    [
        (Status.NEW, 0, Aging.OK),
        (Status.NEW, YELLOW - 0.001, Aging.OK),
        (Status.NEW, YELLOW, Aging.YELLOW),
        (Status.OPEN, RED - 1, Aging.YELLOW),
        (Status.PENDING, RED, Aging.RED),
        (Status.HOLD, 10 * RED, Aging.RED),
        (Status.OPEN, YELLOW + 1, Aging.YELLOW),
        (Status.SOLVED, 10 * RED, Aging.OK),
        (Status.CLOSED, 10 * RED, Aging.OK),
    ],
)
def test_aging(status: Status, age_s: float, expected: Aging) -> None:
    assert aging(status, age_s, yellow_after_s=YELLOW, red_after_s=RED) is expected


def test_aging_with_equal_thresholds_goes_straight_to_red() -> None:
    assert aging(Status.OPEN, 100, yellow_after_s=100, red_after_s=100) is Aging.RED
    assert aging(Status.OPEN, 99, yellow_after_s=100, red_after_s=100) is Aging.OK


# ---------------------------------------------------------------- delivery states

FORWARD = [Delivery.QUEUED, Delivery.SENDING, Delivery.SENT, Delivery.DELIVERED, Delivery.READ]


def expected_advance(current: Delivery | None, new: Delivery) -> bool:
    if current is None:
        return True
    if current in (Delivery.FAILED, Delivery.UNDELIVERED):
        return False
    if new in (Delivery.FAILED, Delivery.UNDELIVERED):
        return True
    return FORWARD.index(new) > FORWARD.index(current)


@pytest.mark.parametrize(
    ("current", "new"), list(itertools.product([None, *Delivery], list(Delivery)))
)
def test_delivery_advances(current: Delivery | None, new: Delivery) -> None:
    assert delivery_advances(current, new) is expected_advance(current, new)


@pytest.mark.parametrize(
    ("sequence", "final"),
    [
        (["queued", "sent", "delivered", "read"], Delivery.READ),
        (["queued", "read", "delivered", "sent"], Delivery.READ),  # out of order
        (["sent", "sent", "delivered", "delivered"], Delivery.DELIVERED),
        (["queued", "failed", "delivered", "read"], Delivery.FAILED),
        (["sent", "undelivered", "read"], Delivery.UNDELIVERED),
        (["accepted", "scheduled", "sending"], Delivery.SENDING),
        (["sent", "canceled", "sent"], Delivery.FAILED),
    ],
)
def test_twilio_callback_sequences(sequence: list[str], final: Delivery) -> None:
    state: Delivery | None = None
    for word in sequence:
        new = TWILIO_DELIVERY[word]
        if delivery_advances(state, new):
            state = new
    assert state is final


def test_terminal_and_outbound_sets() -> None:
    assert frozenset({Delivery.FAILED, Delivery.UNDELIVERED}) == TERMINAL_DELIVERY
    assert EventType.AGENT_REPLY in OUTBOUND_EVENTS and EventType.CSAT_SENT in OUTBOUND_EVENTS
    assert EventType.NOTE not in OUTBOUND_EVENTS
    assert EventType.CUSTOMER_MESSAGE not in OUTBOUND_EVENTS
    assert set(TWILIO_DELIVERY.values()) <= set(Delivery)


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], ()),
        (["VIP"], ("vip",)),
        ([" vip ", "Vip", "vip"], ("vip",)),
        (["billing:late", "lang-fr", "a_b"], ("billing:late", "lang-fr", "a_b")),
        (["b", "a", "b"], ("b", "a")),  # first occurrence order
        (("x" * 64,), ("x" * 64,)),
        ([f"t{i}" for i in range(TAG_MAX)], tuple(f"t{i}" for i in range(TAG_MAX))),
        ([f"t{i % TAG_MAX}" for i in range(TAG_MAX * 2)],
         tuple(f"t{i}" for i in range(TAG_MAX))),  # duplicates do not count
    ],
)
def test_normalize_tags(tags: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_tags(tags) == expected


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ([""], "invalid_tag"),
        (["   "], "invalid_tag"),
        (["two words"], "invalid_tag"),
        (["x" * 65], "invalid_tag"),
        (["semi;colon"], "invalid_tag"),
        (["slash/tag"], "invalid_tag"),
        (["ok", "bad tag"], "invalid_tag"),
        (["line\nbreak"], "invalid_tag"),
        ([f"t{i}" for i in range(TAG_MAX + 1)], "too_many_tags"),
    ],
)
def test_normalize_tags_errors(tags: list[str], code: str) -> None:
    with pytest.raises(TransitionError) as info:
        normalize_tags(tags)
    assert info.value.code == code


# ---------------------------------------------------------------- stored values


def test_ticket_from_minimal_fields_uses_defaults() -> None:
    t = Ticket.from_fields({"id": "7", "contact_id": "c", "channel": "whatsapp",
                            "status": "open", "created_at_ms": "1000"})
    assert t.status is Status.OPEN and t.session is SessionState.ACTIVE
    assert t.updated_at_ms == 1000 and t.tags == () and t.follow_ups == ()
    assert (t.message_count, t.version, t.csat_rating, t.solved_at_ms) == (0, 0, 0, 0)


def test_ticket_from_full_fields() -> None:
    t = Ticket.from_fields({
        "id": "7", "contact_id": "c", "channel": "widget", "status": "closed",
        "created_at_ms": "1000", "updated_at_ms": "5000", "session": "ended",
        "session_ended_reason": "thread_limit", "assignee": "alice", "tags": '["vip","fr"]',
        "solved_at_ms": "3000", "closed_at_ms": "4000", "closed_reason": "thread_limit",
        "message_count": "12", "follow_up_of": "3", "follow_ups": '["9"]', "version": "4",
        "csat_rating": "5", "csat_sent_at_ms": "3500",
    })
    assert t.session is SessionState.ENDED and t.tags == ("vip", "fr")
    assert t.follow_ups == ("9",) and t.follow_up_of == "3"
    assert (t.updated_at_ms, t.message_count, t.csat_rating) == (5000, 12, 5)
    assert t.age_s(61_000) == 60.0
    assert t.age_s(0) == 0  # clock skew never gives a negative age


def test_ticket_field_values_and_empty_json_fields() -> None:
    base = {"id": "7", "contact_id": "c", "channel": "widget", "status": "new",
            "created_at_ms": "1000"}
    t = Ticket.from_fields(base | {"fields": '{"order": "A-1"}', "tags": "[]",
                                   "follow_ups": ""})
    assert t.field_values == {"order": "A-1"} and t.tags == () and t.follow_ups == ()
    empty = [Ticket.from_fields(base | {"fields": "{}"}), Ticket.from_fields(base)]
    assert [e.field_values for e in empty] == [{}, {}]
    assert empty[0].field_values is not empty[1].field_values  # never one shared dict


@pytest.mark.parametrize(("name", "value"), [("status", "lost"), ("session", "paused")])
def test_a_stored_status_or_session_this_version_does_not_know_is_refused(
        name: str, value: str) -> None:
    fields = {"id": "7", "contact_id": "c", "channel": "whatsapp", "status": "open",
              "created_at_ms": "1000", name: value}
    with pytest.raises(ValueError, match=f"'{value}' is not a valid ticket {name}"):
        Ticket.from_fields(fields)


def test_contact_window() -> None:
    c = Contact(id="c", channel="whatsapp", address="whatsapp:+1", window_until_ms=1000)
    assert c.window_open(999) and not c.window_open(1000)
    assert not Contact(id="c", channel="whatsapp", address="x").window_open(0)


def test_an_invalid_tag_is_shown_cut_in_its_error() -> None:
    with pytest.raises(TransitionError) as info:
        normalize_tags(["bad " * 250])
    assert len(str(info.value)) < 200 and "…" in str(info.value)
