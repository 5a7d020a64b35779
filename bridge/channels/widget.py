"""The web chat widget's channel edge: visitor tokens, site JWTs, origins, message bodies,
and the thread as the visitor sees it. Pure functions (the clock is a parameter).

Two kinds of token (README, "Web chat widget"):
- the bridge's own visitor token, HS256 with BRIDGE_SECRET. Its `kid` header is a digest of
  the secret, so after a rotation a token signed with BRIDGE_SECRET_PREVIOUS still verifies
  and is re-issued with the new one at the visitor's next session call;
- a site's JWT for its logged-in users, HS256 under one of BRIDGE_WIDGET_JWT_KEYS named by
  its `kid`; it is exchanged once for a visitor token whose address is `ext:<external_id>`,
  so one external id is one contact on every device and tab.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import jwt

from bridge.core.messages import Channel, InboundMessage
from bridge.core.visitor_thread import EventKey

ISSUER = "bridge-widget"
ALGORITHM = "HS256"
ANONYMOUS_PREFIX = "v_"
EXTERNAL_PREFIX = "ext:"
MAX_BODY_CHARS = 4096
MAX_EXTERNAL_ID_CHARS = 255
# A clock a few seconds apart between the site's servers and ours is not a forgery.
SITE_JWT_LEEWAY_S = 30

_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_BUTTON = re.compile(r"csat:[A-Za-z0-9-]{1,32}:[1-5]")
_VISITOR = re.compile(r"v_[A-Za-z0-9_-]{22}")


class WidgetAuthError(ValueError):
    """A token that does not verify (401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidWidgetInput(ValueError):
    """A request body or parameter the widget API refuses (400)."""


@dataclass(frozen=True)
class Visitor:
    """Who a verified token speaks for. `address` is the contact address on the widget
    channel: the anonymous visitor id, or `ext:<external_id>` for a site's user."""

    address: str
    name: str = ""
    email: str = ""
    expires_at_s: int = 0

    @property
    def identified(self) -> bool:
        return self.address.startswith(EXTERNAL_PREFIX)


def signing_key(secret: str) -> bytes:
    """The HMAC key of visitor tokens: a digest of BRIDGE_SECRET, 32 bytes whatever the
    secret's length (RFC 7518 asks HS256 keys for at least that)."""
    return hashlib.sha256(b"bridge-widget-token\x00" + secret.encode()).digest()


def key_id(secret: str) -> str:
    """A key id that names a secret without revealing it."""
    return "b" + hashlib.sha256(b"bridge-widget-kid\x00" + secret.encode()).hexdigest()[:12]


def new_visitor_address() -> str:
    return ANONYMOUS_PREFIX + secrets.token_urlsafe(16)


def issue_visitor_token(visitor: Visitor, *, secret: str, now_s: int, ttl_s: int) -> str:
    if not secret:
        raise ValueError("BRIDGE_SECRET is not set: the widget cannot issue tokens")
    claims: dict[str, Any] = {"iss": ISSUER, "sub": visitor.address, "iat": now_s,
                              "exp": now_s + ttl_s}
    if visitor.name:
        claims["name"] = visitor.name
    if visitor.email:
        claims["email"] = visitor.email
    return jwt.encode(claims, signing_key(secret), algorithm=ALGORITHM,
                      headers={"kid": key_id(secret)})


def _header(token: str) -> dict[str, Any]:
    # A JWT is ASCII; aiohttp hands header bytes that are not UTF-8 over as surrogates.
    if not token or len(token) > 4096 or not token.isascii():
        raise WidgetAuthError("invalid_token", "missing, oversized or non-ASCII token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise WidgetAuthError("invalid_token", "the token is not a JWT") from None
    if header.get("alg") != ALGORITHM:
        raise WidgetAuthError("invalid_token", f"only {ALGORITHM} tokens are accepted")
    return header


def _decode(token: str, key: str | bytes, *, now_s: int, leeway_s: int = 0,
            issuer: str | None = None, required: tuple[str, ...] = ("exp",),
            any_audience: bool = False) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=issuer, leeway=leeway_s,
            options={"require": list(required), "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False,
                     "verify_aud": not any_audience})
    except jwt.PyJWTError as exc:
        raise WidgetAuthError("invalid_token", f"token rejected: {exc}") from None
    # Expiry and not-before checked against our clock parameter, not PyJWT's time.time().
    # NumericDate may have a fraction (RFC 7519, section 2).
    exp = claims.get("exp")
    if not _numeric_date(exp):
        raise WidgetAuthError("invalid_token", "exp must be a number of seconds")
    if exp + leeway_s <= now_s:
        raise WidgetAuthError("token_expired", "the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None:
        if not _numeric_date(nbf):
            raise WidgetAuthError("invalid_token", "nbf must be a number of seconds")
        if nbf - leeway_s > now_s:
            raise WidgetAuthError("invalid_token", "the token is not valid yet (nbf)")
    return claims


def _numeric_date(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify_visitor_token(token: str, *, secrets_by_age: tuple[str, ...], now_s: int
                         ) -> Visitor:
    """A visitor token signed with the current secret or an older one still configured."""
    header = _header(token)
    keys = {key_id(s): s for s in secrets_by_age if s}
    secret = keys.get(str(header.get("kid", "")))
    if secret is None:
        raise WidgetAuthError("unknown_key", "the token is signed with an unknown key")
    claims = _decode(token, signing_key(secret), now_s=now_s, issuer=ISSUER,
                     required=("exp", "sub", "iss"))
    address = claims.get("sub")
    if not isinstance(address, str) or not (
            _VISITOR.fullmatch(address) or address.startswith(EXTERNAL_PREFIX)):
        raise WidgetAuthError("invalid_token", "the token names no visitor")
    return Visitor(address, str(claims.get("name") or ""), str(claims.get("email") or ""),
                   int(claims["exp"]))


def verify_site_jwt(token: str, *, keys: Mapping[str, str], now_s: int) -> Visitor:
    """A site's JWT for a logged-in user: HS256 under the key its `kid` names; claims
    external_id and exp, optional name and email."""
    header = _header(token)
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise WidgetAuthError("unknown_key", "the JWT's kid names no configured key")
    # The key names the integration: an audience the site sets for its own use is not ours
    # to check (PyJWT would refuse any `aud` unless told which one to expect).
    claims = _decode(token, keys[kid], now_s=now_s, leeway_s=SITE_JWT_LEEWAY_S,
                     required=("exp", "external_id"), any_audience=True)
    external_id = claims.get("external_id")
    if (not isinstance(external_id, str) or not 0 < len(external_id) <= MAX_EXTERNAL_ID_CHARS
            or not external_id.isprintable()):
        raise WidgetAuthError("invalid_token",
                              f"external_id must be 1-{MAX_EXTERNAL_ID_CHARS} printable characters")
    name, email = claims.get("name", ""), claims.get("email", "")
    if not isinstance(name, str) or not isinstance(email, str):
        raise WidgetAuthError("invalid_token", "name and email must be strings")
    return Visitor(EXTERNAL_PREFIX + external_id, name[:200], email[:320], int(claims["exp"]))


def origin_allowed(origin: str, allowed: frozenset[str]) -> bool:
    return origin.lower() in allowed


# ------------------------------------------------------------------ messages


# C0 controls and DEL, but tab, line feed and carriage return: a message is text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(data: Mapping[str, Any], name: str, *, max_chars: int) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise InvalidWidgetInput(f"{name} must be a string")
    if len(value) > max_chars:
        raise InvalidWidgetInput(f"{name} is longer than {max_chars} characters")
    if _CONTROL.search(value):
        raise InvalidWidgetInput(f"{name} contains a control character (only tab and line "
                                 "breaks are allowed)")
    return value


def parse_message(data: Mapping[str, Any], visitor: Visitor, *, received_at_ms: int
                  ) -> InboundMessage:
    """A visitor's message: `client_id` (the widget's id for it, so a retried send is stored
    once), `body`, or `button` (a survey button's id)."""
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise InvalidWidgetInput("client_id must be 8-64 letters, digits, _ or -")
    body = _text(data, "body", max_chars=MAX_BODY_CHARS)
    button = _text(data, "button", max_chars=64)
    if button and not _BUTTON.fullmatch(button):
        raise InvalidWidgetInput("button is not a survey button id")
    if not body.strip() and not button:
        raise InvalidWidgetInput("a message needs a body or a button")
    return InboundMessage(
        channel=Channel.WIDGET,
        provider_id="widget:" + client_id,
        contact_address=visitor.address,
        received_at_ms=received_at_ms,
        body=body,
        button_payload=button,
        # What the thread shows for a tap on a survey that no longer takes answers (it is
        # then a message, as a WhatsApp quick reply's ButtonText is): the score, "4/5".
        button_text=f"{button.rsplit(':', 1)[1]}/5" if button else "",
        profile_name=visitor.name,
        external_user_id=visitor.address.removeprefix(EXTERNAL_PREFIX)
        if visitor.identified else "",
    )


def parse_event_key(raw: str) -> EventKey:
    try:
        return EventKey.parse(raw)
    except ValueError as exc:
        raise InvalidWidgetInput(str(exc)) from None
