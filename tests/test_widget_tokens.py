"""Widget tokens and inputs as pure functions: the bridge's visitor tokens (rotation), the
sites' JWTs (kid, claims, expiry), message bodies, event keys."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from bridge.channels import widget
from bridge.core.changes import Change, ChangeKind
from bridge.core.tickets import Delivery, Event, EventType
from bridge.core.visitor_thread import EventKey, concerns_visitor, visitor_view

NOW = 1_800_000_000
SECRET = "current-secret-0123456789abcdef0123456789"
OLD = "previous-secret-0123456789abcdef012345678"
KEY = widget.signing_key(SECRET)
KID = widget.key_id(SECRET)
SITE_KEYS = {"site-2026": "s" * 40, "site-2025": "t" * 40}


def site_jwt(claims: dict[str, Any] | None = None, *, kid: str | None = "site-2026",
             key: str | None = None, alg: str = "HS256") -> str:
    body = {"external_id": "user-42", "exp": NOW + 300, "name": "Ada", "email": "ada@ex.com"}
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(body, key or SITE_KEYS.get(kid or "", "x" * 40), algorithm=alg,
                      headers=headers)


def test_a_visitor_token_round_trips() -> None:
    visitor = widget.Visitor(widget.new_visitor_address())
    token = widget.issue_visitor_token(visitor, secret=SECRET, now_s=NOW, ttl_s=3600)
    back = widget.verify_visitor_token(token, secrets_by_age=(SECRET, ""), now_s=NOW + 10)
    assert back.address == visitor.address and not back.identified


def test_a_token_signed_with_the_previous_secret_still_verifies() -> None:
    visitor = widget.Visitor(widget.new_visitor_address())
    token = widget.issue_visitor_token(visitor, secret=OLD, now_s=NOW, ttl_s=3600)
    assert widget.verify_visitor_token(token, secrets_by_age=(SECRET, OLD),
                                       now_s=NOW).address == visitor.address
    with pytest.raises(widget.WidgetAuthError) as info:
        widget.verify_visitor_token(token, secrets_by_age=(SECRET, ""), now_s=NOW)
    assert info.value.code == "unknown_key"


def _forged(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{sig[:-4]}AAAA"


@pytest.mark.parametrize(("make", "code"), [
    (lambda t: _forged(t), "invalid_token"),
    (lambda t: t + "x", "invalid_token"),
    (lambda t: "not-a-jwt", "invalid_token"),
    (lambda t: "", "invalid_token"),
    (lambda t: t + "\udcff", "invalid_token"),
    (lambda t: "é" + t, "invalid_token"),
    (lambda t: jwt.encode({"sub": "v_" + "a" * 22, "exp": NOW + 60, "iss": "bridge-widget"},
                          "other-secret-0123456789abcdef0123",
                          headers={"kid": widget.key_id(SECRET)}), "invalid_token"),
    (lambda t: jwt.encode({"sub": "v_" + "a" * 22, "exp": NOW + 60, "iss": "bridge-widget"},
                          KEY, headers={"kid": "nope"}), "unknown_key"),
    (lambda t: jwt.encode({"sub": "v_" + "a" * 22, "exp": NOW - 1, "iss": "bridge-widget"},
                          KEY, headers={"kid": KID}), "token_expired"),
    (lambda t: jwt.encode({"sub": "../../x", "exp": NOW + 60, "iss": "bridge-widget"},
                          KEY, headers={"kid": KID}), "invalid_token"),
    (lambda t: jwt.encode({"sub": "v_" + "a" * 22, "exp": NOW + 60, "iss": "someone"},
                          KEY, headers={"kid": KID}), "invalid_token"),
    (lambda t: jwt.encode({"sub": "v_" + "a" * 22, "exp": NOW + 60, "iss": "bridge-widget"},
                          SECRET * 2, algorithm="HS512",
                          headers={"kid": widget.key_id(SECRET)}),
     "invalid_token"),
    # A site's JWT is not a visitor token, even under a known kid.
    (lambda t: site_jwt(), "unknown_key"),
])
def test_bad_visitor_tokens_are_refused(make: Any, code: str) -> None:
    good = widget.issue_visitor_token(widget.Visitor(widget.new_visitor_address()),
                                      secret=SECRET, now_s=NOW, ttl_s=3600)
    with pytest.raises(widget.WidgetAuthError) as info:
        widget.verify_visitor_token(make(good), secrets_by_age=(SECRET, ""), now_s=NOW)
    assert info.value.code == code


def test_an_unsigned_token_is_refused() -> None:
    token = jwt.encode({"sub": "v_" + "a" * 22, "exp": NOW + 60, "iss": "bridge-widget"},
                       None, algorithm="none", headers={"kid": widget.key_id(SECRET)})
    with pytest.raises(widget.WidgetAuthError):
        widget.verify_visitor_token(token, secrets_by_age=(SECRET,), now_s=NOW)


def test_a_site_jwt_names_one_external_contact() -> None:
    visitor = widget.verify_site_jwt(site_jwt(), keys=SITE_KEYS, now_s=NOW)
    assert visitor.address == "ext:user-42" and visitor.identified
    assert (visitor.name, visitor.email) == ("Ada", "ada@ex.com")
    older = widget.verify_site_jwt(site_jwt(kid="site-2025"), keys=SITE_KEYS, now_s=NOW)
    assert older.address == visitor.address


@pytest.mark.parametrize(("token", "code"), [
    (lambda: site_jwt(kid="unknown"), "unknown_key"),
    (lambda: site_jwt(kid=None), "unknown_key"),
    (lambda: site_jwt(key="w" * 40), "invalid_token"),
    (lambda: site_jwt({"exp": NOW - 3600}), "token_expired"),
    (lambda: site_jwt({"exp": None}), "invalid_token"),
    (lambda: site_jwt({"external_id": None}), "invalid_token"),
    (lambda: site_jwt({"external_id": ""}), "invalid_token"),
    (lambda: site_jwt({"external_id": 42}), "invalid_token"),
    (lambda: site_jwt({"external_id": "x" * 256}), "invalid_token"),
    (lambda: site_jwt({"external_id": "a\nb"}), "invalid_token"),
    (lambda: site_jwt({"name": ["x"]}), "invalid_token"),
    (lambda: site_jwt(alg="HS384", key="s" * 48), "invalid_token"),
    (lambda: site_jwt({"nbf": NOW + 3600}), "invalid_token"),
    (lambda: site_jwt({"nbf": "soon"}), "invalid_token"),
    (lambda: site_jwt({"exp": True}), "invalid_token"),
])
def test_bad_site_jwts_are_refused(token: Any, code: str) -> None:
    with pytest.raises(widget.WidgetAuthError) as info:
        widget.verify_site_jwt(token(), keys=SITE_KEYS, now_s=NOW)
    assert info.value.code == code


def test_a_site_jwt_may_carry_an_audience_a_fractional_expiry_and_a_past_nbf() -> None:
    # RFC 7519: NumericDate may have a fraction; the audience is the site's business (the
    # key names the integration); nbf within the leeway is accepted.
    token = site_jwt({"aud": "https://shop.example.com", "exp": NOW + 300.5,
                      "nbf": NOW + widget.SITE_JWT_LEEWAY_S - 1})
    visitor = widget.verify_site_jwt(token, keys=SITE_KEYS, now_s=NOW)
    assert visitor.address == "ext:user-42" and visitor.expires_at_s == NOW + 300


VISITOR = widget.Visitor("v_" + "b" * 22)


def test_a_message_becomes_an_inbound_widget_message() -> None:
    msg = widget.parse_message({"client_id": "abcdef12", "body": "Bonjour"}, VISITOR,
                               received_at_ms=5)
    assert msg.channel.value == "widget" and msg.provider_id == "widget:abcdef12"
    assert msg.contact_address == VISITOR.address and msg.body == "Bonjour"


def test_tabs_and_line_breaks_are_text() -> None:
    message = widget.parse_message({"client_id": "abcdef12", "body": "a\tb\r\nc\nd"},
                                   VISITOR, received_at_ms=NOW * 1000)
    assert message.body == "a\tb\r\nc\nd"


@pytest.mark.parametrize("data", [
    {},
    {"client_id": "short", "body": "x"},
    {"client_id": "has spaces!", "body": "x"},
    {"client_id": 12345678, "body": "x"},
    {"client_id": "abcdef12"},
    {"client_id": "abcdef12", "body": "   "},
    {"client_id": "abcdef12", "body": 5},
    {"client_id": "abcdef12", "body": "x" * 4097},
    {"client_id": "abcdef12", "body": "a\x00b"},
    {"client_id": "abcdef12", "body": "\x01" * 40},
    {"client_id": "abcdef12", "body": "bell\x07"},
    {"client_id": "abcdef12", "body": "del\x7f"},
    {"client_id": "abcdef12", "button": "csat:1:9"},
    {"client_id": "abcdef12", "button": "anything"},
])
def test_bad_messages_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(widget.InvalidWidgetInput):
        widget.parse_message(data, VISITOR, received_at_ms=5)


@pytest.mark.parametrize("raw", ["", "1-0", "1-0_", "x-0_1", "1-0_1_2", "1" * 16 + "-0_1",
                                 "1-0_1\n"])
def test_bad_event_keys_are_refused(raw: str) -> None:
    with pytest.raises(widget.InvalidWidgetInput):
        widget.parse_event_key(raw)


def test_event_keys_order_by_stream_id_then_ticket() -> None:
    keys = [EventKey.parse(k) for k in ("10-1_1", "9-5_7", "10-0_9", "10-1_0")]
    assert [str(k) for k in sorted(keys)] == ["9-5_7", "10-0_9", "10-1_0", "10-1_1"]
    assert EventKey.of("3", "17-2") == EventKey.parse("17-2_3")


def _event(etype: EventType, **kw: Any) -> Event:
    return Event(id="5-0", ticket_id="2", type=etype, at_ms=5, author="alice", **kw)


@pytest.mark.parametrize(("event", "shown"), [
    (_event(EventType.CUSTOMER_MESSAGE, body="hi", data={"provider_id": "widget:abc"}),
     {"type": "visitor", "body": "hi", "client_id": "abc"}),
    (_event(EventType.AGENT_REPLY, body="hello", delivery=Delivery.SENT),
     {"type": "agent", "body": "hello", "read": False}),
    (_event(EventType.AGENT_REPLY, body="hello", delivery=Delivery.READ),
     {"type": "agent", "body": "hello", "read": True}),
    (_event(EventType.AGENT_REPLY, body="x", delivery=Delivery.FAILED), None),
    (_event(EventType.NOTE, body="internal"), None),
    (_event(EventType.TICKET_UPDATED), None),
    (_event(EventType.MACRO_APPLIED, body=""), None),
    (_event(EventType.SESSION_ENDED), {"type": "ended"}),
    (_event(EventType.CSAT_ANSWERED, data={"rating": 4, "provider_id": "widget:xyz"}),
     {"type": "csat_answered", "rating": 4, "client_id": "xyz"}),
    (_event(EventType.CSAT_SENT, body="Rate us", data={"buttons": [{"id": "csat:2:5",
                                                                    "title": "Great"}]}),
     {"type": "csat", "body": "Rate us", "buttons": [{"id": "csat:2:5", "title": "Great"}]}),
])
def test_the_visitor_sees_only_what_is_meant_for_them(event: Event,
                                                     shown: dict[str, Any] | None) -> None:
    view = visitor_view(event)
    if shown is None:
        assert view is None
    else:
        assert view == {"key": "5-0_2", "at_ms": 5, **shown}


def test_widget_settings_are_read_from_the_environment() -> None:
    from config.settings import Settings

    settings = Settings.from_env({
        "BRIDGE_WIDGET_ORIGINS": "https://Shop.example.com:443, http://localhost:3000/, "
                                 "http://blog.example.com:80, https://api.example.com:8443",
        "BRIDGE_WIDGET_JWT_KEYS": f"a:{'x' * 32}, b:{'y' * 40}",
        "BRIDGE_SECRET_PREVIOUS": "previous-widget-secret-7f3a-0123456789",
        "BRIDGE_WIDGET_VISITOR_RATE": "5",
        "BRIDGE_WIDGET_TRUST_FORWARDED_FOR": "1"})
    # A default port is dropped: a browser's Origin never names it (it matched no page).
    assert settings.widget_origins == ("https://shop.example.com", "http://localhost:3000",
                                       "http://blog.example.com", "https://api.example.com:8443")
    assert {k: str(v) for k, v in settings.widget_jwt_keys.items()} == {"a": "x" * 32,
                                                                        "b": "y" * 40}
    # Masked in repr (a short value such as "old" would also match other fields' names).
    assert str(settings.secret_previous) == "previous-widget-secret-7f3a-0123456789"
    assert "previous-widget-secret-7f3a-0123456789" not in repr(settings)
    assert settings.widget_visitor_messages_per_min == 5
    assert settings.widget_trust_forwarded_for


@pytest.mark.parametrize(("name", "value"), [
    ("BRIDGE_WIDGET_ORIGINS", "*"),
    ("BRIDGE_WIDGET_ORIGINS", "https://shop.example.com/path"),
    ("BRIDGE_WIDGET_ORIGINS", "ftp://shop.example.com"),
    ("BRIDGE_WIDGET_ORIGINS", "https://user@shop.example.com"),
    ("BRIDGE_WIDGET_JWT_KEYS", "nokey"),
    ("BRIDGE_WIDGET_JWT_KEYS", "a:short"),
    ("BRIDGE_WIDGET_JWT_KEYS", f"a:{'x' * 32},a:{'y' * 32}"),
    ("BRIDGE_WIDGET_TOKEN_TTL_S", "5"),
    ("BRIDGE_WIDGET_IP_RATE", "0"),
    ("BRIDGE_WIDGET_TRUST_FORWARDED_FOR", "yes"),
])
def test_bad_widget_settings_stop_start_up(name: str, value: str) -> None:
    from config.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def _change(kind: ChangeKind, **kw: Any) -> Change:
    return Change(log_id="5-0", kind=kind, ticket_id="2", contact_id="c", at_ms=5, **kw)


@pytest.mark.parametrize(("change", "reread"), [
    (_change(ChangeKind.ROUTED, action="append"), True),
    (_change(ChangeKind.ROUTED, action="csat_answer"), True),
    (_change(ChangeKind.UPDATED, event_types=("agent_reply",)), True),
    (_change(ChangeKind.UPDATED, event_types=("status_changed", "macro_applied")), True),
    (_change(ChangeKind.UPDATED, event_types=("session_ended",)), True),
    (_change(ChangeKind.UPDATED, event_types=("csat_sent",)), True),
    (_change(ChangeKind.UPDATED, event_types=()), True),
    (_change(ChangeKind.UPDATED, event_types=("note",)), False),
    (_change(ChangeKind.UPDATED, event_types=("ticket_updated", "status_changed")), False),
    (_change(ChangeKind.DELIVERY, delivery="sent"), False),
    (_change(ChangeKind.DELIVERY, delivery="read"), False),
])
def test_only_changes_the_visitor_can_see_wake_their_widget(change: Change,
                                                             reread: bool) -> None:
    assert concerns_visitor(change) is reread
