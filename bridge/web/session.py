"""Cookie sessions of the workspace (/app/): sign-in with an agent's or the admin's token,
the same Principal the API's bearer tokens give, CSRF on every form.

- The cookie holds an opaque random id (HttpOnly, SameSite=Lax, Secure when the request
  came over HTTPS, directly or through the platform's router); the record lives in Redis
  (bridge/store/sessions.py). Sign-in always creates a new id and deletes the one the
  browser had: a session id planted before sign-in is worth nothing after it (fixation).
- Each session has its own CSRF token; every POST under /app/ must carry it, as the form
  field `csrf_token` or the header `X-CSRF-Token`. The sign-in form itself has no session
  yet: it uses a double-submit cookie.
- A session whose agent no longer appears in BRIDGE_AGENT_TOKENS (or an admin session
  once BRIDGE_ADMIN_TOKEN is unset) is treated as signed out.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from bridge.store.sessions import SessionRecord, SessionStore
from bridge.web.auth import (
    PRINCIPAL,
    Principal,
    Role,
    authenticate_header,
    credential_stamp,
    credential_stamps,
    still_signed_in,
)
from bridge.web.errors import ApiError
from bridge.web.keys import redis_key

SESSION_COOKIE = "bridge_session"
SIGNIN_CSRF_COOKIE = "bridge_signin_csrf"
SESSION_TTL_S = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

SESSION = web.RequestKey("workspace_session", SessionRecord)


def sessions(request: web.Request) -> SessionStore:
    return SessionStore(request.app[redis_key], ttl_s=SESSION_TTL_S)


def over_https(request: web.Request) -> bool:
    """HTTPS to the browser: directly, or terminated by the platform's router."""
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               *, max_age_s: int | None = None) -> None:
    response.set_cookie(name, value, path="/app", httponly=True, samesite="Lax",
                        secure=over_https(request), max_age=max_age_s)


async def _still_allowed(request: web.Request, record: SessionRecord) -> Principal | None:
    try:
        role = Role(record.role)
    except ValueError:
        return None
    # Signed in with a token that no longer signs them in (rotated after a leak, removed):
    # the session ends with it.
    if record.stamp not in await credential_stamps(request.app, record.name):
        return None
    # Role and groups as they are now (bridge/core/teams.py: people in Redis).
    return await still_signed_in(request.app, record.name, role)


async def load_session(request: web.Request) -> Principal | None:
    """The signed-in principal (also put where the API's `principal()` finds it)."""
    record = await sessions(request).get(request.cookies.get(SESSION_COOKIE, ""))
    if record is None:
        return None
    who = await _still_allowed(request, record)
    if who is None:
        return None
    request[SESSION] = record
    request[PRINCIPAL] = who
    return who


async def sign_in(request: web.Request, token: str) -> tuple[Principal, SessionRecord]:
    """Check a token as the API would; on success a brand-new session replaces any other."""
    who = await authenticate_header(request.app, f"Bearer {token.strip()}")
    store = sessions(request)
    await store.delete(request.cookies.get(SESSION_COOKIE, ""))
    record = await store.create(name=who.name, role=who.role.value,
                                stamp=credential_stamp(token))
    request[SESSION] = record
    request[PRINCIPAL] = who
    return who, record


async def sign_out(request: web.Request) -> None:
    await sessions(request).delete(request.cookies.get(SESSION_COOKIE, ""))


def csrf_token(request: web.Request) -> str:
    record = request.get(SESSION)
    return record.csrf_token if record else ""


def check_csrf(request: web.Request, supplied: str) -> None:
    """403 unless the request carries this session's CSRF token."""
    expected = csrf_token(request)
    supplied = supplied or request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise ApiError(403, "csrf", "missing or wrong CSRF token: reload the page")


def new_signin_csrf() -> str:
    return secrets.token_urlsafe(24)


def check_signin_csrf(request: web.Request, supplied: str) -> None:
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise ApiError(403, "csrf", "missing or wrong CSRF token: reload the sign-in page")
