"""The webhook export's pure parts, as tables: answers, retry schedule, safe targets, event
filters, redaction and the events of a change."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bridge.core.changes import Change, ChangeKind, Origin
from bridge.core.export_events import (
    ExportEventType,
    check_event_filter,
    export_items,
    payload,
    redact,
    subscribed,
)
from bridge.core.export_policy import (
    MAX_ATTEMPTS,
    Outcome,
    address_refusal,
    legacy_ipv4,
    outcome_of,
    parse_retry_after,
    retry_delay_s,
    target_refusal,
    total_retry_window_s,
    url_refusal,
)
from bridge.core.tickets import Contact, Event, EventType


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (299, Outcome.DELIVERED),
    (410, Outcome.GONE), (429, Outcome.THROTTLED), (502, Outcome.THROTTLED),
    (503, Outcome.THROTTLED), (504, Outcome.THROTTLED), (500, Outcome.THROTTLED),
    (400, Outcome.FAILED), (404, Outcome.FAILED), (301, Outcome.FAILED), (None, Outcome.FAILED),
])
def test_outcome_of_an_answer(status: int | None, outcome: Outcome) -> None:
    assert outcome_of(status) is outcome


def test_retries_back_off_exponentially_over_about_three_days() -> None:
    nominal = [retry_delay_s(n, jitter=0.5) for n in range(1, MAX_ATTEMPTS)]
    assert all(d is not None for d in nominal)
    delays = [d for d in nominal if d is not None]
    assert delays[0] == 5.0 and delays[1] == 15.0 and delays[2] == 45.0
    assert delays == sorted(delays)
    assert max(delays) == 12 * 3600
    assert 2.5 * 86400 <= total_retry_window_s() <= 3.5 * 86400
    assert retry_delay_s(MAX_ATTEMPTS, jitter=0.5) is None
    # Queued longer than the whole schedule (behind a failing delivery): no more retries.
    assert retry_delay_s(1, jitter=0.5, waited_s=total_retry_window_s() + 1) is None
    assert retry_delay_s(1, jitter=0.5, waited_s=total_retry_window_s() - 1) == 5.0


@pytest.mark.parametrize(("jitter", "low", "high"), [(0.0, 0.8, 0.8), (0.999, 1.19, 1.2)])
def test_jitter_spreads_retries_within_twenty_percent(jitter: float, low: float,
                                                      high: float) -> None:
    delay = retry_delay_s(3, jitter=jitter)
    assert delay is not None and 45 * low <= delay <= 45 * high


def test_retry_after_is_honoured_but_bounded() -> None:
    assert retry_delay_s(1, jitter=0.5, retry_after_s=120) == 120
    assert retry_delay_s(1, jitter=0.5, retry_after_s=10**9) == 3600
    assert retry_delay_s(5, jitter=0.5, retry_after_s=1) == 405  # the schedule when longer


@pytest.mark.parametrize(("raw", "seconds"), [
    ("120", 120.0), (" 3 ", 3.0), ("", None), (None, None), ("-1", None), ("1.5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("٣", None),
])
def test_retry_after_header(raw: str | None, seconds: float | None) -> None:
    assert parse_retry_after(raw) == seconds


@pytest.mark.parametrize(("url", "allow_http", "refused"), [
    ("https://hooks.example.com/bridge", False, None),
    ("https://hooks.example.com:8443/x?y=1", False, None),
    ("http://hooks.example.com/x", False, "https"),
    ("http://hooks.example.com/x", True, None),
    ("ftp://hooks.example.com/x", True, "http"),
    ("https://user:pw@hooks.example.com/x", False, "credentials"),
    ("https:///nohost", False, "host"),
    ("https://hooks.example.com/a b", False, "spaces"),
    ("https://hooks.example.com/x#frag", False, "fragment"),
    ("https://hooks.example.com:99999/x", False, "valid"),
    ("https://exämple.com/", False, "ASCII"),
    ("", False, "non-empty"),
    (42, False, "non-empty"),
    ("https://e.com/" + "a" * 3000, False, "longer"),
])
def test_url_refusal(url: object, allow_http: bool, refused: str | None) -> None:
    found = url_refusal(url, allow_http=allow_http)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found


@pytest.mark.parametrize(("address", "refused"), [
    ("93.184.216.34", None), ("2606:2800:220:1:248:1893:25c8:1946", None),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("169.254.10.1", "link-local"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("fe80::1", "link-local"),
    ("fc00::1", "private"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
    ("100.64.0.1", "public"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "metadata"), ("240.0.0.1", "reserved"), ("nonsense", "not an IP"),
    ("fec0::1", "site-local"),
])
def test_address_refusal(address: str, refused: str | None) -> None:
    found = address_refusal(address, allow_private=False)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found


def test_allow_private_lets_a_local_receiver_through_but_never_the_metadata_service() -> None:
    assert address_refusal("127.0.0.1", allow_private=True) is None
    assert address_refusal("10.0.0.8", allow_private=True) is None
    assert address_refusal("169.254.169.254", allow_private=True) is not None
    assert address_refusal("fd00:ec2::254", allow_private=True) is not None


@pytest.mark.parametrize(("url", "refused"), [
    ("https://hooks.example.com/x", None), ("https://localhost/x", "loopback"),
    ("https://api.localhost./x", "loopback"), ("https://127.0.0.1:8443/x", "loopback"),
    ("https://[::1]/x", "loopback"), ("https://169.254.169.254/latest", "metadata"),
    ("https://10.0.0.1/x", "private"), ("https://2130706433/x", "loopback"),
    ("https://0x7f000001/x", "loopback"), ("https://127.1/x", "loopback"),
    ("https://0177.0.0.1/x", "loopback"), ("https://0xa.1/x", "private"),
    ("https://1572395042/x", None),  # 93.184.216.34, a public address
    ("https://2130706433.example.com/x", None), ("https://4294967296/x", None),
])
def test_target_refusal_checks_literal_hosts_at_set_up(url: str, refused: str | None) -> None:
    found = target_refusal(url, allow_http=False, allow_private=False)
    assert (found is None) if refused is None else (found is not None and refused in found)


@pytest.mark.parametrize(("url", "refused"), [
    ("https://127.0.0.1:9911/x", None), ("https://localhost/x", None),
    ("https://10.0.0.1/x", None), ("https://hooks.example.com/x", None),
    # once accepted when saved with BRIDGE_EXPORT_ALLOW_PRIVATE (delivery refused them)
    ("https://169.254.169.254/latest", "metadata"), ("https://2852039166/x", "metadata"),
    ("https://[fd00:ec2::254]/x", "metadata"),
])
def test_allow_private_still_refuses_the_metadata_service_at_set_up(
        url: str, refused: str | None) -> None:
    found = target_refusal(url, allow_http=False, allow_private=True)
    assert (found is None) if refused is None else (found is not None and refused in found)


def test_legacy_ipv4_reads_host_names_as_inet_aton_does() -> None:
    import socket
    for host in ("2130706433", "0x7f000001", "127.1", "0177.0.0.1", "10.1.258", "0xa.1",
                 "1.2.3.4", "0", "255.255.255.255", "00", "0xFF.0"):
        assert legacy_ipv4(host) == socket.inet_ntoa(socket.inet_aton(host)), host
    for host in ("example.com", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "4294967296",
                 "08", "0x1g", "0x", "", "1..2", "-1", "1_0", "0xf_f", "\u0661", " 1"):
        assert legacy_ipv4(host) is None, host


@pytest.mark.parametrize(("events", "error"), [
    (["*"], None), (["ticket.created", "ticket.created"], None),
    ([], "non-empty"), ("*", "non-empty"), (["ticket.exploded"], "unknown"), ([1], "unknown"),
])
def test_event_filter(events: object, error: str | None) -> None:
    if error is None:
        assert check_event_filter(events) == tuple(dict.fromkeys(events))  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=error):
            check_event_filter(events)


def test_subscription_matches_listed_types_and_star() -> None:
    assert subscribed(("*",), "note.added")
    assert subscribed(("note.added",), "note.added")
    assert not subscribed(("ticket.created",), "note.added")


def test_redaction_nulls_personal_fields_wherever_they_are() -> None:
    data = {"contact": {"id": "c1", "address": "whatsapp:+33612345678", "name": "Camille"},
            "message": {"id": "1-0", "body": "my card is 4970...", "media": [{"url": "u"}],
                        "author": "customer"},
            "list": [{"body": "x"}]}
    out = redact(data)
    assert out == {"contact": {"id": "c1", "address": None, "name": None},
                   "message": {"id": "1-0", "body": None, "media": None, "author": "customer"},
                   "list": [{"body": None}]}
    assert data["message"]["body"] == "my card is 4970..."  # the input is not changed


def _change(**kw: object) -> Change:
    values: dict[str, object] = {"log_id": "1700000000000-0", "kind": ChangeKind.UPDATED,
                                 "ticket_id": "7", "contact_id": "cid",
                                 "at_ms": 1_700_000_000_000}
    values.update(kw)
    return Change(**values)  # type: ignore[arg-type]


def _event(etype: EventType, body: str = "", **data: object) -> Event:
    return Event(id="1700000000000-1", ticket_id="7", type=etype, at_ms=1_700_000_000_000,
                 author="alice", body=body, data=dict(data))


CONTACT = Contact(id="cid", channel="whatsapp", address="whatsapp:+33612345678", name="Camille")


@pytest.mark.parametrize(("change", "events", "types"), [
    (_change(kind=ChangeKind.ROUTED, action="new_ticket"),
     [_event(EventType.CUSTOMER_MESSAGE, "Bonjour")],
     ["ticket.created", "message.received"]),
    (_change(kind=ChangeKind.ROUTED, action="append"),
     [_event(EventType.CUSTOMER_MESSAGE, "encore")], ["message.received"]),
    (_change(kind=ChangeKind.ROUTED, action="reopen", status_from="solved", status_to="open"),
     [_event(EventType.CUSTOMER_MESSAGE, "re")], ["message.received", "ticket.status_changed"]),
    # The customer's answer to a pending ticket opens it: exported like any status change.
    (_change(kind=ChangeKind.ROUTED, action="append", status_from="pending", status_to="open"),
     [_event(EventType.CUSTOMER_MESSAGE, "voilà")],
     ["message.received", "ticket.status_changed"]),
    (_change(kind=ChangeKind.ROUTED, action="append", status_from="open", status_to="open"),
     [_event(EventType.CUSTOMER_MESSAGE, "encore")], ["message.received"]),
    (_change(kind=ChangeKind.ROUTED, action="follow_up", previous_ticket_id="6",
             close_reason="thread_limit"),
     [_event(EventType.CUSTOMER_MESSAGE, "x")],
     ["ticket.status_changed", "ticket.created", "message.received"]),
    (_change(kind=ChangeKind.ROUTED, action="csat_answer"),
     [_event(EventType.CSAT_ANSWERED, "5", rating=5)], ["csat.answered"]),
    (_change(origin=Origin.AGENT),
     [_event(EventType.STATUS_CHANGED, **{"from": "new", "to": "open", "assignee": "bob",
                                          "tags": ["vip"]})],
     ["ticket.status_changed", "ticket.assigned", "ticket.tagged"]),
    (_change(), [_event(EventType.SESSION_ENDED, reason="agent")], ["session.ended"]),
    (_change(), [_event(EventType.NOTE, "internal")], ["note.added"]),
    (_change(), [_event(EventType.AGENT_REPLY, "Bonjour !")], ["message.sent"]),
    (_change(), [_event(EventType.CSAT_SENT, "How did we do?")], ["message.sent"]),
    (_change(kind=ChangeKind.DELIVERY, event_id="1-0", delivery="failed", error_code="63016"),
     [], ["message.delivery_status_changed"]),
    (_change(), [], []),
])
def test_export_events_of_a_change(change: Change, events: list[Event],
                                   types: list[str]) -> None:
    items = export_items(change, events, CONTACT)
    assert [i.type.value for i in items] == types
    # One id per event, the same every time the change is read (retries, replays).
    assert len({i.webhook_id for i in items}) == len(items)
    assert [i.webhook_id for i in export_items(change, events, CONTACT)] == [
        i.webhook_id for i in items]


def test_a_customers_status_change_and_a_thread_limit_close_say_from_what() -> None:
    [_, moved] = export_items(_change(kind=ChangeKind.ROUTED, action="append",
                                      status_from="pending", status_to="open"),
                              [_event(EventType.CUSTOMER_MESSAGE, "voilà")], CONTACT)
    assert moved.data["status"] == {"from": "pending", "to": "open",
                                    "reason": "customer_message"}
    [closed, *_] = export_items(_change(kind=ChangeKind.ROUTED, action="follow_up",
                                        ticket_id="8", previous_ticket_id="6",
                                        close_reason="thread_limit", previous_status="open"),
                                [_event(EventType.CUSTOMER_MESSAGE, "x")], CONTACT)
    assert closed.ticket_id == "6"
    assert closed.data["status"] == {"from": "open", "to": "closed", "reason": "thread_limit"}


def test_ids_differ_between_partitions_with_the_same_stream_id() -> None:
    a = export_items(_change(ticket_id="1"), [_event(EventType.NOTE, "n")])
    b = export_items(_change(ticket_id="2"), [_event(EventType.NOTE, "n")])
    assert a[0].webhook_id != b[0].webhook_id


def test_payload_shape_and_anonymised_payload() -> None:
    change = _change(kind=ChangeKind.ROUTED, action="new_ticket")
    created, received = export_items(change, [_event(EventType.CUSTOMER_MESSAGE, "Bonjour")],
                                     CONTACT)
    assert created.type is ExportEventType.TICKET_CREATED
    full = payload(created, anonymize=False)
    assert full["schema_version"] == 1 and full["type"] == "ticket.created"
    assert full["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert full["data"]["contact"]["address"] == "whatsapp:+33612345678"
    anonymous = payload(created, anonymize=True)
    assert anonymous["data"]["contact"] == {"id": "cid", "address": None, "name": None}
    assert payload(received, anonymize=False)["data"]["message"]["body"] == "Bonjour"
    assert payload(received, anonymize=True)["data"]["message"]["body"] is None


@pytest.mark.parametrize(("value", "cell"), [
    ("=SUM(A1)", "'=SUM(A1)"),
    (["-A1:A9", "vip"], "'-A1:A9;vip"),  # tags: once left unguarded
    (["vip", "=x"], "vip;=x"),  # only the cell's start is read as a formula
    (-5, "-5"),
    (2.5, "2.5"),
    (None, ""),
    ({"a": "=b"}, '{"a": "=b"}'),
])
def test_csv_cells_a_spreadsheet_would_run_are_quoted(value: object, cell: str) -> None:
    from bridge.core.export_rows import render
    out = render([{"c": value}], ("c",), "csv", header=False)
    assert next(csv.reader(io.StringIO(out))) == [cell]


def test_an_anonymised_body_keeps_its_shape_and_redacting_twice_changes_nothing() -> None:
    from bridge.core.export_events import anonymized_body
    body = ('{"type":"message.received","timestamp":"2026-12-01T00:00:00.000Z",'
            '"schema_version":1,"data":{"ticket_id":"7","message":{"body":"Bonjour é",'
            '"media":["https://m"]},"contact":{"address":"whatsapp:+336","name":"Camille"}}}')
    once = anonymized_body(body)
    assert json.loads(once)["data"] == {"ticket_id": "7",
                                        "message": {"body": None, "media": None},
                                        "contact": {"address": None, "name": None}}
    assert json.loads(once)["type"] == "message.received"
    assert anonymized_body(once) == once
