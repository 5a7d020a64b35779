"""Webhook export endpoints (admin): set-up, secret rotation, health, failed deliveries,
replays.

    POST   /api/v1/webhook-endpoints                  {url, events, description?, anonymize?,
                                                       follow_redirects?} -> 201 endpoint +
                                                       secret (shown this once)
    GET    /api/v1/webhook-endpoints                  {"endpoints": [endpoint]}
    GET    /api/v1/webhook-endpoints/{id}             endpoint (with its health)
    PATCH  /api/v1/webhook-endpoints/{id}             {url?, events?, enabled?, description?,
                                                       anonymize?, follow_redirects?}
    DELETE /api/v1/webhook-endpoints/{id}             204 (its outbox goes too)
    POST   /api/v1/webhook-endpoints/{id}/rotate-secret   {secret, previous_valid_until}
    GET    /api/v1/webhook-endpoints/{id}/health      health
    GET    /api/v1/webhook-endpoints/{id}/failed      {"deliveries": [...]} newest first
    POST   /api/v1/webhook-endpoints/{id}/replay      {webhook_id} or {since} -> 202
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from bridge.core.export_events import check_event_filter, iso
from bridge.core.export_policy import Endpoint, description_refusal, since_ms, target_refusal
from bridge.store.export_endpoints import ROTATION_GRACE_S, EndpointStore, TooManyEndpoints
from bridge.store.export_outbox import Health, Outbox
from bridge.store.records import NotFound
from bridge.web.auth import require_admin
from bridge.web.bodies import json_object
from bridge.web.errors import ApiError, not_found, unprocessable
from bridge.web.keys import redis_key, settings_key

routes = web.RouteTableDef()

BASE = "/api/v1/webhook-endpoints"
_ENDPOINT_ID = re.compile(r"ep_[0-9a-f]{16}")
_CREATE_FIELDS = frozenset({"url", "events", "description", "anonymize", "follow_redirects"})
_PATCH_FIELDS = _CREATE_FIELDS | {"enabled"}


def now_ms() -> int:
    return int(time.time() * 1000)


def endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events),
            "description": endpoint.description, "enabled": endpoint.enabled,
            "anonymize": endpoint.anonymize, "follow_redirects": endpoint.follow_redirects,
            "created_at": iso(endpoint.created_at_ms) if endpoint.created_at_ms else None,
            "disabled_reason": endpoint.disabled_reason or None}


def health_json(endpoint: Endpoint, health: Health) -> dict[str, Any]:
    state = ("disabled" if not endpoint.enabled
             else "failing" if health.consecutive_failures else "healthy")
    return {"state": state, "delivered": health.delivered,
            "failed_attempts": health.failed_attempts, "given_up": health.given_up,
            "consecutive_failures": health.consecutive_failures,
            "last_success_at": iso(health.last_success_ms) if health.last_success_ms else None,
            "last_failure_at": iso(health.last_failure_ms) if health.last_failure_ms else None,
            "last_status": health.last_status, "last_error": health.last_error or None,
            "backlog": health.backlog, "retrying_tickets": health.retrying_tickets,
            "failed": health.failed}


def _store(request: web.Request) -> EndpointStore:
    return EndpointStore(request.app[redis_key])


async def _endpoint(request: web.Request) -> Endpoint:
    endpoint_id = request.match_info["id"]
    if not _ENDPOINT_ID.fullmatch(endpoint_id):
        raise not_found(f"webhook endpoint {endpoint_id[:40]} not found")
    try:
        return await _store(request).get(endpoint_id)
    except NotFound as exc:
        raise not_found(str(exc)) from None


def _checked(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a create or patch body, validated (422 naming the field)."""
    settings = request.app[settings_key]
    out: dict[str, Any] = {}
    if "url" in data:
        refusal = target_refusal(data["url"], allow_http=settings.development,
                                 allow_private=settings.export_allow_private)
        if refusal:
            raise ApiError(422, "invalid_url", refusal)
        out["url"] = data["url"]
    if "events" in data:
        try:
            out["events"] = check_event_filter(data["events"])
        except ValueError as exc:
            raise ApiError(422, "invalid_events", str(exc)) from None
    if "description" in data:
        description = data["description"]
        refusal = description_refusal(description)
        if refusal is not None:
            raise unprocessable(refusal)
        out["description"] = description
    for flag in ("enabled", "anonymize", "follow_redirects"):
        if flag in data:
            if not isinstance(data[flag], bool):
                raise unprocessable(f"{flag} must be true or false")
            out[flag] = data[flag]
    return out


@routes.post(BASE)
async def create_endpoint(request: web.Request) -> web.Response:
    require_admin(request)
    data = _checked(request, await json_object(request, _CREATE_FIELDS))
    for required in ("url", "events"):
        if required not in data:
            raise unprocessable(f"{required} is required")
    try:
        endpoint, secret = await _store(request).create(
            url=data["url"], events=data["events"], description=data.get("description", ""),
            anonymize=data.get("anonymize", False),
            follow_redirects=data.get("follow_redirects", False), now_ms=now_ms())
    except TooManyEndpoints as exc:
        raise ApiError(409, "too_many_endpoints", str(exc)) from None
    return web.json_response({**endpoint_json(endpoint), "secret": secret}, status=201)


@routes.get(BASE)
async def list_endpoints(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"endpoints": [endpoint_json(e)
                                            for e in await _store(request).all()]})


@routes.get(BASE + "/{id}")
async def get_endpoint(request: web.Request) -> web.Response:
    require_admin(request)
    endpoint = await _endpoint(request)
    health = await Outbox(request.app[redis_key], endpoint.id).health()
    return web.json_response({**endpoint_json(endpoint),
                              "health": health_json(endpoint, health)})


@routes.patch(BASE + "/{id}")
async def patch_endpoint(request: web.Request) -> web.Response:
    require_admin(request)
    endpoint = await _endpoint(request)
    changes = _checked(request, await json_object(request, _PATCH_FIELDS))
    try:
        updated = await _store(request).update(endpoint.id, **changes)
    except NotFound as exc:
        raise not_found(str(exc)) from None
    return web.json_response(endpoint_json(updated))


@routes.delete(BASE + "/{id}")
async def delete_endpoint(request: web.Request) -> web.Response:
    require_admin(request)
    endpoint = await _endpoint(request)
    await _store(request).delete(endpoint.id)
    return web.Response(status=204)


@routes.post(BASE + "/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    require_admin(request)
    endpoint = await _endpoint(request)
    at_ms = now_ms()
    secret = await _store(request).rotate_secret(endpoint.id, now_ms=at_ms)
    return web.json_response({"secret": secret,
                              "previous_valid_until": iso(at_ms + ROTATION_GRACE_S * 1000)})


@routes.get(BASE + "/{id}/health")
async def endpoint_health(request: web.Request) -> web.Response:
    require_admin(request)
    endpoint = await _endpoint(request)
    health = await Outbox(request.app[redis_key], endpoint.id).health()
    return web.json_response(health_json(endpoint, health))


@routes.get(BASE + "/{id}/failed")
async def failed_deliveries(request: web.Request) -> web.Response:
    require_admin(request)
    endpoint = await _endpoint(request)
    raw = request.query.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= 1000:
        raise unprocessable("limit must be a number from 1 to 1000")
    failed = await Outbox(request.app[redis_key], endpoint.id).failed(limit=int(raw))
    return web.json_response({"deliveries": [
        {"webhook_id": f["item"].webhook_id, "type": f["item"].type,
         "ticket_id": f["item"].ticket_id, "error": f["error"], "attempts": f["attempts"],
         "failed_at": iso(f["failed_at_ms"]), "created_at": iso(f["item"].created_ms)}
        for f in failed]})


def parse_since(raw: object) -> int:
    """An ISO 8601 time (with its offset, or Z) as epoch milliseconds."""
    ms = since_ms(raw)
    if ms is None:
        raise unprocessable("since must be an ISO 8601 time, e.g. 2026-12-01T00:00:00Z",
                            "invalid_since")
    return ms


@routes.post(BASE + "/{id}/replay")
async def replay(request: web.Request) -> web.Response:
    """One failed delivery again ({webhook_id}), or everything since a time ({since})."""
    require_admin(request)
    endpoint = await _endpoint(request)
    data = await json_object(request, frozenset({"webhook_id", "since"}))
    if ("webhook_id" in data) == ("since" in data):
        raise unprocessable("send either webhook_id or since")
    outbox = Outbox(request.app[redis_key], endpoint.id)
    if "webhook_id" in data:
        webhook_id = data["webhook_id"]
        if not isinstance(webhook_id, str) or not 0 < len(webhook_id) <= 200:
            raise unprocessable("webhook_id must be a failed delivery's webhook_id")
        count = await outbox.replay_failed(webhook_id)
        if not count:
            raise not_found(f"no failed delivery {webhook_id[:80]} on this endpoint")
    else:
        count = await outbox.replay_since(parse_since(data["since"]))
    return web.json_response({"replayed": count}, status=202)
