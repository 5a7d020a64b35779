"""Prometheus metrics of the web process (served at /metrics)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "bridge_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
LATENCY = Histogram(
    "bridge_http_request_seconds", "Request latency", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# bridge/web/loop_lag.py: a probe every 50 ms. Requests wait as long as the loop is late.
LOOP_LAG = Histogram(
    "bridge_event_loop_lag_seconds",
    "How late the web process's event loop woke a probe due every 50 ms: CPU saturation, "
    "a blocking call, a collector pause or a machine giving the process no CPU",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INBOUND = Counter(
    "bridge_inbound_messages_total", "Inbound messages by routing action", ["channel", "action"]
)
WEBHOOK_REJECTED = Counter(
    "bridge_webhook_rejected_total", "Webhooks refused", ["reason"]
)
REDIS_UNAVAILABLE = Counter(
    "bridge_redis_unavailable_total", "Requests answered 503 because Redis was unreachable"
)
STATUS_CALLBACKS = Counter(
    "bridge_status_callbacks_total", "Delivery status callbacks", ["status", "applied"]
)

# Read from Redis at each scrape (bridge.web.health): what the workers have to do.
JOBS = Gauge("bridge_jobs", "RQ jobs by queue and state", ["queue", "state"])
JOBS_OVERDUE = Gauge(
    "bridge_jobs_overdue",
    "Scheduled jobs (timers, retries) due more than 30 s ago: RQ's scheduler moves them "
    "every second, so these mean that no scheduler is running", ["queue"],
)
WORKERS = Gauge("bridge_workers", "Registered RQ workers")
REDIS_UP = Gauge("bridge_redis_up", "Whether Redis answered this scrape's queue readings")
RELAY_LAG_EVENTS = Gauge(
    "bridge_relay_lag_events",
    "Change log entries the relay has not handed on yet to a consumer (workers.relay), "
    "counted up to 100 per partition: alert on bridge_relay_lag_seconds",
    ["consumer"])
RELAY_LAG_SECONDS = Gauge(
    "bridge_relay_lag_seconds",
    "Age of the oldest change log entry not handed on yet (0: none): above a few seconds, "
    "no relay is running or it cannot keep up", ["consumer"])

_inbound: dict[tuple[str, str], Any] = {}


def count_inbound(channel: str, action: str) -> None:
    """INBOUND.labels(...).inc() without labels()'s lock and checks on every webhook."""
    child = _inbound.get((channel, action))
    if child is None:
        child = _inbound[(channel, action)] = INBOUND.labels(channel, action)
    child.inc()


# Label values come from the client: anything outside these would let a client create
# series without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# (method, route, status) -> (request counter, latency histogram): labels() takes a lock
# and validates on every call; the set of keys is bounded by routes x methods x statuses.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(request: web.Request, status: int, elapsed_s: float) -> None:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    key = (method, route, status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (REQUESTS.labels(method, route, str(status)),
                                 LATENCY.labels(route))
    pair[0].inc()
    pair[1].observe(elapsed_s)
