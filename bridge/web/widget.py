"""The web chat widget's HTTP API (README, "Web chat widget"): visitor sessions, sending,
history, read position, typing. Real time is in bridge/web/widget_live.py, the script and
the demo page in bridge/web/widget_assets.py.

Every call is a POST (or the WebSocket's GET upgrade): browsers always label those with
`Origin`, so the allow-list is checked on every call, and a call without `Origin` is
refused. Each call checks, before anything is written: the origin (403), the caller's IP
budget (429), the visitor token (401), the body (4xx).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bridge.channels import widget as channel
from bridge.core.csat import rating_signal
from bridge.core.messages import Channel, contact_id_for
from bridge.core.teams import Access, Permission
from bridge.core.visitor_thread import EventKey, visitor_view
from bridge.store.widget import WidgetStore
from bridge.web import metrics
from bridge.web.access import need
from bridge.web.auth import require
from bridge.web.bodies import json_object
from bridge.web.errors import ApiError
from bridge.web.keys import settings_key, store_key
from config.settings import Settings

routes = web.RouteTableDef()

API_PREFIX = "/widget/v1/"
widget_store_key = web.AppKey("widget_store", WidgetStore)
allowed_origins_key = web.AppKey("widget_origins", frozenset)
HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 100
# Each IP's budget is counted per minute; a visitor's messages too.
WINDOW_S = 60


@dataclass(frozen=True)
class VisitorContext:
    visitor: channel.Visitor
    contact_id: str


def allowed_origins(settings: Settings) -> frozenset[str]:
    """BRIDGE_WIDGET_ORIGINS, and the bridge's own public origin (the demo page)."""
    own = settings.public_base_url.split("/", 3)
    return frozenset({*settings.widget_origins, f"{own[0]}//{own[2]}".lower()})


# Names that only ever mean the machine itself.
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def origin_ok(request: web.Request) -> bool:
    origin = request.headers.get("Origin", "")
    if not origin:
        return False
    if channel.origin_allowed(origin, request.app[allowed_origins_key]):
        return True
    # A laptop run may open its demo page as http://localhost:8080 while PUBLIC_BASE_URL
    # says 127.0.0.1: in development a page on a loopback name may call that same host.
    # Only loopback names: accepting any Origin equal to the Host header let any page
    # whose requests carry a Host of its choosing pass (a DNS rebinding page, a script
    # outside a browser).
    if not request.app[settings_key].development:
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    # The bridge's own port, not the Host header's: a script outside a browser chooses
    # both headers, and any loopback port passed then.
    return (parts.hostname in _LOOPBACK_NAMES and parts.scheme == request.scheme
            and port == request.app[settings_key].port)


def check_origin(request: web.Request) -> None:
    if not origin_ok(request):
        metrics.WEBHOOK_REJECTED.labels("widget_origin").inc()
        raise ApiError(403, "origin_not_allowed",
                       "this page's origin is not in BRIDGE_WIDGET_ORIGINS")


def client_ip(request: web.Request) -> str:
    settings = request.app[settings_key]
    if settings.widget_trust_forwarded_for:
        # The platform's router appends the address it saw: the last entry is the one no
        # client can forge.
        forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or "unknown"


def too_many(retry_after_s: float, what: str) -> ApiError:
    return ApiError(429, "too_many_requests", f"too many {what}: try again later",
                    headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


async def check_ip_budget(request: web.Request) -> None:
    settings = request.app[settings_key]
    wait_s = await request.app[widget_store_key].take(
        "ip", client_ip(request), limit=settings.widget_ip_requests_per_min,
        window_s=WINDOW_S)
    if wait_s:
        raise too_many(wait_s, "requests from this address")


def verify_token(settings: Settings, token: str) -> VisitorContext:
    try:
        visitor = channel.verify_visitor_token(
            token, secrets_by_age=(str(settings.secret), str(settings.secret_previous)),
            now_s=int(time.time()))
    except channel.WidgetAuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    return VisitorContext(visitor, contact_id_for(settings.contact_key_bytes, Channel.WIDGET,
                                                  visitor.address))


def bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <visitor token>")
    return token.strip()


async def guarded(request: web.Request) -> VisitorContext:
    """Origin, IP budget, then the visitor token: the order every call checks them in."""
    check_origin(request)
    await check_ip_budget(request)
    return verify_token(request.app[settings_key], bearer(request))


def key_param(data: dict[str, Any], name: str) -> EventKey | None:
    raw = data.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ApiError(400, "invalid", f"{name} must be an event key string")
    try:
        return channel.parse_event_key(raw)
    except channel.InvalidWidgetInput as exc:
        raise ApiError(400, "invalid", f"{name}: {exc}") from None


def shown(events: list[Any]) -> list[dict[str, Any]]:
    return [view for e in events if (view := visitor_view(e)) is not None]


# ------------------------------------------------------------------ handlers


@routes.post("/widget/v1/session")
async def session(request: web.Request) -> web.Response:
    """Start or continue a visitor session: with `user_jwt` (a site's logged-in user), with
    the stored visitor token (Authorization), or as a new anonymous visitor."""
    check_origin(request)
    await check_ip_budget(request)
    settings = request.app[settings_key]
    if not settings.secret:
        raise ApiError(503, "widget_disabled", "BRIDGE_SECRET is not set")
    data = await json_object(request, frozenset({"user_jwt"}), optional=True)
    now_s = int(time.time())
    user_jwt = data.get("user_jwt")
    if user_jwt is not None:
        if not isinstance(user_jwt, str):
            raise ApiError(400, "invalid", "user_jwt must be a string")
        keys = {kid: str(key) for kid, key in settings.widget_jwt_keys.items()}
        try:
            visitor = channel.verify_site_jwt(user_jwt, keys=keys, now_s=now_s)
        except channel.WidgetAuthError as exc:
            raise ApiError(401, exc.code, exc.message) from None
    elif request.headers.get("Authorization"):
        visitor = verify_token(settings, bearer(request)).visitor
        if visitor.identified:
            # Renewed with itself, a signed-in user's access outlived the site's JWT for
            # ever: the site's word (a fresh JWT) is what extends it.
            raise ApiError(401, "user_jwt_required", "a signed-in visitor's session is "
                                                     "renewed with the site's JWT (user_jwt)")
    else:
        visitor = channel.Visitor(channel.new_visitor_address())
    ttl_s = (min(settings.widget_user_token_ttl_s, settings.widget_token_ttl_s)
             if visitor.identified else settings.widget_token_ttl_s)
    token = channel.issue_visitor_token(visitor, secret=str(settings.secret), now_s=now_s,
                                        ttl_s=ttl_s)
    cid = contact_id_for(settings.contact_key_bytes, Channel.WIDGET, visitor.address)
    read = await request.app[widget_store_key].read_position(cid)
    return web.json_response({
        "token": token,
        "identified": visitor.identified,
        "name": visitor.name,
        "read_up_to": str(read) if read else None,
    })


@routes.post("/widget/v1/messages")
async def send_message(request: web.Request) -> web.Response:
    ctx = await guarded(request)
    data = await json_object(request, frozenset({"client_id", "body", "button"}))
    now_ms = int(time.time() * 1000)
    try:
        msg = channel.parse_message(data, ctx.visitor, received_at_ms=now_ms)
    except channel.InvalidWidgetInput as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    settings = request.app[settings_key]
    widget_store = request.app[widget_store_key]
    # A retry of a message already stored (the widget's outbox after a network error, or
    # the same queued message sent by two tabs) is answered as the duplicate it is, before
    # it uses up any of the visitor's allowance.
    if await widget_store.already_stored(ctx.contact_id, msg.provider_id):
        return web.json_response({"duplicate": True, "action": "duplicate"})
    wait_s = await widget_store.take(
        "visitor", ctx.contact_id, limit=settings.widget_visitor_messages_per_min,
        window_s=WINDOW_S)
    if wait_s:
        raise too_many(wait_s, "messages")
    signal = rating_signal(body=msg.body, button_payload=msg.button_payload,
                           replied_to_id=msg.replied_to_id)
    result = await request.app[store_key].route_inbound(
        msg, signal, settings.policy(Channel.WIDGET), now_ms=now_ms)
    metrics.count_inbound(Channel.WIDGET.value, result.action.value)
    if result.event_id is None or result.ticket_id is None:
        # A retried send (same client_id): stored once, by the first try.
        return web.json_response({"duplicate": True, "action": result.action.value})
    key = EventKey.of(result.ticket_id, result.event_id)
    return web.json_response({"key": str(key), "action": result.action.value,
                              "duplicate": False}, status=201)


@routes.post("/widget/v1/history")
async def history(request: web.Request) -> web.Response:
    """The thread newest first, a page at a time (`before`: the previous page's cursor)."""
    ctx = await guarded(request)
    data = await json_object(request, frozenset({"before", "limit"}), optional=True)
    before = key_param(data, "before")
    limit = data.get("limit", HISTORY_PAGE)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_HISTORY_PAGE:
        raise ApiError(400, "invalid", f"limit must be a number from 1 to {MAX_HISTORY_PAGE}")
    page = await request.app[widget_store_key].events_before(ctx.contact_id, before,
                                                              limit=limit)
    return web.json_response({"events": shown(page.events),
                              "before": str(page.before) if page.before else None})


@routes.post("/widget/v1/read")
async def read(request: web.Request) -> web.Response:
    """The visitor has seen the thread up to `key`: agents see their messages `read`."""
    ctx = await guarded(request)
    data = await json_object(request, frozenset({"key"}))
    upto = key_param(data, "key")
    if upto is None:
        raise ApiError(400, "invalid", "key is required")
    # Where the position stands now (a key past the thread's newest event stops there).
    moved, position = await request.app[widget_store_key].mark_read(ctx.contact_id, upto)
    return web.json_response({"read_up_to": str(position) if position else None,
                              "marked": moved})


@routes.post("/widget/v1/typing")
async def visitor_typing(request: web.Request) -> web.Response:
    ctx = await guarded(request)
    await json_object(request, frozenset(), optional=True)  # checked like every call's
    await request.app[widget_store_key].publish_typing(ctx.contact_id, "visitor")
    return web.Response(status=204)


@routes.post("/api/v1/tickets/{id}/typing")
async def agent_typing(request: web.Request) -> web.Response:
    """An agent is typing on a widget ticket: the visitor sees an indicator (ephemeral).
    Whoever may reply to the ticket may say so; other channels have no indicator (422)."""
    who = require(request, Permission.TICKETS_WORK)
    ticket = await request.app[store_key].get_ticket(request.match_info["id"])
    need(who, ticket, Access.WORK)
    if ticket.channel != Channel.WIDGET.value:
        raise ApiError(422, "not_widget", "typing indicators reach widget visitors only")
    await request.app[widget_store_key].publish_typing(ticket.contact_id, "agent")
    return web.Response(status=204)


async def preflight(request: web.Request) -> web.Response:
    check_origin(request)
    return web.Response(status=204)


# ------------------------------------------------------------------ wiring


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Widget calls come from the sites' pages: answers (errors included, so the widget can
    read a 429's Retry-After) name the allowed origin."""
    if not request.path.startswith(API_PREFIX) or not origin_ok(request):
        return
    response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    response.headers["Access-Control-Max-Age"] = "600"
    response.headers["Vary"] = "Origin"


async def widget_store_ctx(app: web.Application) -> Any:
    app[widget_store_key] = WidgetStore(app[store_key])
    yield


def setup(app: web.Application) -> None:
    """The API's part of the widget (bridge/web/widget_setup.py wires the rest)."""
    app[allowed_origins_key] = allowed_origins(app[settings_key])
    app.cleanup_ctx.append(widget_store_ctx)
    app.add_routes(routes)
    # Only the calls that exist: a catch-all here made an unknown call's POST a 405.
    app.router.add_route("OPTIONS", "/widget/v1/{call:session|messages|history|read|typing"
                         "|poll}", preflight)
    app.on_response_prepare.append(add_cors_headers)
