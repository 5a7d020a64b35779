"""Error shape, authentication and metrics for every request."""

from __future__ import annotations

import logging
import time

import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.web import metrics
from bridge.web.auth import PRINCIPAL, authenticate
from bridge.web.errors import ApiError, error_response
from bridge.web.keys import settings_key

log = logging.getLogger("bridge.web")

# Public paths under /api (the OpenAPI document describes the API; it is not a secret).
_PUBLIC_API = frozenset({"/api/openapi.json"})

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as {"error": {"code", "message"}} with the right status; Redis
    being unreachable is a 503 so providers retry (never "200 and drop")."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason or code)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError) as exc:
        metrics.REDIS_UNAVAILABLE.inc()
        log.warning("redis unavailable on %s %s: %s", request.method, request.path,
                    type(exc).__name__)
        return error_response(503, "unavailable", "storage is unavailable, retry later",
                              headers={"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and request.path not in _PUBLIC_API:
        settings = request.app[settings_key]
        request[PRINCIPAL] = authenticate(settings, request.headers.get("Authorization", ""))
    return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    metrics.REQUESTS.labels(request.method, name, str(response.status)).inc()
    metrics.LATENCY.labels(name).observe(time.perf_counter() - started)
    return response
