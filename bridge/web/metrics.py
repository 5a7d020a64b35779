"""Prometheus metrics of the web process (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "bridge_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
LATENCY = Histogram(
    "bridge_http_request_seconds", "Request latency", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
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
