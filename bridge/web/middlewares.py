"""The one middleware every request goes through: authentication of the API, the error
shape, the headers of JSON answers, and request metrics.

One middleware rather than three: each aiohttp middleware is another coroutine layer on
every request, and a webhook's whole budget is a few hundred microseconds. The three jobs
stay separate functions below, applied in a fixed order (authenticate, handle, map errors,
count).
"""

from __future__ import annotations

import logging
import time

import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.store.tickets import Conflict, NotFound
from bridge.web import metrics
from bridge.web.auth import PRINCIPAL, authenticate_request
from bridge.web.errors import ApiError, conflict_error, error_response
from bridge.web.session import load_session
from bridge.web.workspace.common import error_page

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

# Every JSON answer (data or error) holds tickets or tokens' verdicts: no shared cache may
# keep it, and no browser may read it as HTML.
_JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

# MovedError: REDIS_URL is a Redis Cluster node (not supported; the processes refuse to
# start on one): a 503 too, so providers retry rather than drop on a 500.
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
               redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
               redis.exceptions.MovedError)


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        if request.path.startswith("/api/") and request.path not in _PUBLIC_API:
            request[PRINCIPAL] = await authenticate_request(request)
        response = await handler(request)
    except Exception as exc:
        error = _api_error(request, exc)
        response = (await _error_page(request, error) if _is_page(request)
                    else error_response(error.status, error.code, error.message,
                                        headers=error.headers or None))
    # The header, not `response.content_type`: that parses it, on every webhook too.
    content_type = response.headers.get("Content-Type", "")
    if content_type.partition(";")[0] == "application/json" and not response.prepared:
        response.headers.update(_JSON_HEADERS)
    metrics.observe_request(request, response.status, time.perf_counter() - started)
    return response


def _is_page(request: web.Request) -> bool:
    return request.path == "/app" or request.path.startswith("/app/")


async def _error_page(request: web.Request, error: ApiError) -> web.Response:
    """The workspace's error page for an error under /app/ (an unknown path, a failure the
    page guard does not catch): a person reads it, and it needs the pages' headers (CSP,
    no framing) as much as any page does. Same status, message and extra headers."""
    who = request.get(PRINCIPAL)
    if who is None and error.status != 503:  # an unknown path: the guard did not run
        try:
            who = await load_session(request)  # the header's name and links
        except _REDIS_DOWN:
            who = None
    page = error_page(request, who, error.status, error.message)
    page.headers.update(error.headers)
    return page


def _api_error(request: web.Request, exc: Exception) -> ApiError:
    """Every error leaves as {"error": {"code", "message"}} (or, under /app/, as a page) with
    the right status; Redis being unreachable is a 503 so providers retry (never "200 and
    drop")."""
    if isinstance(exc, ApiError):
        return exc
    # The store's refusals, mapped here once rather than in each handler.
    if isinstance(exc, Conflict):
        return conflict_error(exc)
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc) or "not found")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:  # redirects are answers, not errors
            raise exc
        code = _HTTP_CODES.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason or code)
    if isinstance(exc, _REDIS_DOWN):
        metrics.REDIS_UNAVAILABLE.inc()
        log.warning("redis unavailable on %s %s: %s", request.method, request.path,
                    type(exc).__name__)
        return ApiError(503, "unavailable", "storage is unavailable, retry later",
                        headers={"Retry-After": "5"})
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return ApiError(500, "internal", "internal error")
