"""Bearer tokens: agents (BRIDGE_AGENT_TOKENS) and the admin (BRIDGE_ADMIN_TOKEN)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from bridge.web.errors import ApiError
from config.settings import Settings


class Role(StrEnum):
    AGENT = "agent"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


# request[PRINCIPAL] is set by the API middleware.
PRINCIPAL = web.RequestKey("principal", Principal)


def authenticate(settings: Settings, header: str) -> Principal:
    """Pure: map an Authorization header to a principal, comparing in constant time."""
    supplied = _bearer(header)
    if settings.admin_token and hmac.compare_digest(supplied, str(settings.admin_token).encode()):
        return Principal("admin", Role.ADMIN)
    for name, secret in settings.agent_tokens.items():
        if hmac.compare_digest(supplied, str(secret).encode()):
            return Principal(name, Role.AGENT)
    raise ApiError(401, "unauthorized", "unknown token")


def authorize_metrics(settings: Settings, header: str) -> None:
    """/metrics takes its own token (a scraper needs no agent's rights); without one it is
    open in development and closed elsewhere."""
    if not settings.metrics_token:
        if settings.development:
            return
        raise ApiError(403, "forbidden", "set BRIDGE_METRICS_TOKEN to scrape /metrics")
    if not hmac.compare_digest(_bearer(header), str(settings.metrics_token).encode()):
        raise ApiError(401, "unauthorized", "unknown token")


def _bearer(header: str) -> bytes:
    """The token of "Bearer <token>". aiohttp hands bytes that are not UTF-8 over as lone
    surrogates, which no token contains: such a header is refused like any unknown one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        return token.strip().encode()
    except UnicodeEncodeError:
        raise ApiError(401, "unauthorized", "unknown token") from None


def principal(request: web.Request) -> Principal:
    found: Principal | None = request.get(PRINCIPAL)
    if found is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    return found


def require_admin(request: web.Request) -> Principal:
    who = principal(request)
    if who.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", "this call needs the admin token")
    return who
