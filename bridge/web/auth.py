"""Bearer tokens: the bootstrap admin (BRIDGE_ADMIN_TOKEN), agents of BRIDGE_AGENT_TOKENS, and
the people managed through the API (`bridge agents ...`), whose tokens are kept hashed in
Redis. A person's role and groups come from Redis (an environment agent without a record
there is an agent of no group); the permission table is bridge/core/teams.py."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from aiohttp import web

from bridge.core.teams import Actor, Permission, Role, allowed
from bridge.store.teams import TeamStore, hash_token
from bridge.web.errors import ApiError
from bridge.web.keys import redis_key, settings_key
from config.settings import Settings

__all__ = [
    "PRINCIPAL",
    "Principal",
    "Role",
    "authenticate",
    "authenticate_header",
    "authenticate_request",
    "demand",
    "principal",
    "principal_named",
    "require",
    "require_admin",
    "still_signed_in",
]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> Actor:
        return Actor(name=self.name, role=self.role, groups=self.groups)


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


async def authenticate_request(request: web.Request) -> Principal:
    """The principal of an API request (its Authorization header)."""
    return await authenticate_header(request.app, request.headers.get("Authorization", ""))


async def authenticate_header(app: web.Application, header: str) -> Principal:
    """The environment's tokens first (no round trip for the bootstrap admin), then the
    tokens of people in Redis; role and groups from Redis (401 for an unknown token)."""
    try:
        found = authenticate(app[settings_key], header)
    except ApiError:
        supplied = _bearer(header)
        name = await TeamStore(app[redis_key]).name_of_token(supplied.decode(errors="replace"))
        if name is None:
            raise
        found = Principal(name, Role.AGENT)
    if found.role is Role.ADMIN and found.name == "admin":
        return found
    return await principal_named(app, found.name, found.role)


async def still_signed_in(app: web.Application, name: str, role: Role) -> Principal | None:
    """A workspace session's principal now: None once its token is gone (the admin token
    unset, the agent out of BRIDGE_AGENT_TOKENS and without a record in Redis)."""
    settings = app[settings_key]
    if role is Role.ADMIN and name == "admin":
        return Principal(name, role) if settings.admin_token else None
    person = await TeamStore(app[redis_key]).find_person(name)
    if person is not None:
        return Principal(name, person.role, person.groups)
    return Principal(name, Role.AGENT) if name in settings.agent_tokens else None


def credential_stamp(token: str) -> str:
    """What a workspace session keeps of the token it was signed in with: a digest of the
    token's SHA-256 (the form people's tokens are kept in), never the token."""
    return _stamp_of_hash(hash_token(token.strip()))


def _stamp_of_hash(token_hash: str) -> str:
    return hashlib.sha256(f"stamp:{token_hash}".encode()).hexdigest()[:32]


async def credential_stamps(app: web.Application, name: str) -> set[str]:
    """The stamps of every token that signs `name` in now: the admin token, their
    BRIDGE_AGENT_TOKENS entry, their token in Redis. A session whose stamp is not among
    them ends (the token was rotated or removed)."""
    settings = app[settings_key]
    stamps = set()
    if name == "admin" and settings.admin_token:
        stamps.add(credential_stamp(str(settings.admin_token)))
    if name in settings.agent_tokens:
        stamps.add(credential_stamp(str(settings.agent_tokens[name])))
    stored = await TeamStore(app[redis_key]).token_hash_of(name)
    if stored:
        stamps.add(_stamp_of_hash(stored))
    return stamps


async def principal_named(app: web.Application, name: str, role: Role = Role.AGENT
                          ) -> Principal:
    """The principal of someone signed in by name (a token here, a session cookie for the
    workspace pages): their role and groups from Redis, else `role` and no group."""
    person = await TeamStore(app[redis_key]).find_person(name)
    if person is None:
        return Principal(name, role)
    return Principal(name, person.role, person.groups)


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


def demand(who: Principal, permission: Permission) -> None:
    """403 unless `who`'s role has `permission`."""
    if not allowed(who.role, permission):
        raise ApiError(403, "forbidden", f"the {who.role.value} role cannot do this "
                                         f"({permission.value})")


def require(request: web.Request, permission: Permission) -> Principal:
    """The principal, when their role has `permission` (403 otherwise)."""
    who = principal(request)
    demand(who, permission)
    return who


def require_admin(request: web.Request) -> Principal:
    who = principal(request)
    if who.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", "this call needs the admin token")
    return who
