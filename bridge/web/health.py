"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import time

import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.jobs import WORKERS_KEY
from bridge.store.changelog import CONSUMERS, REPAIR_CONSUMER, ChangeLog
from bridge.store.monitoring import read_queues
from bridge.web import metrics as m
from bridge.web.auth import authorize_metrics
from bridge.web.keys import queues_key, redis_key, settings_key

# A scheduled job this late was not moved by a scheduler (RQ's moves them every second).
OVERDUE_S = 30

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up (no dependency checked: a Redis outage must not restart dynos)."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            cluster = await request.app[redis_key].info("cluster")
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "redis": type(exc).__name__}, status=503
        )
    # A Redis Cluster node answers a PING, then MOVED to most commands (not supported).
    if cluster.get("cluster_enabled"):
        return web.json_response({"status": "unavailable", "redis": "cluster_not_supported"},
                                 status=503)
    return web.json_response({"status": "ok", "redis": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    authorize_metrics(request.app[settings_key], request.headers.get("Authorization", ""))
    await _read_queues(request.app)
    await _read_relay_lag(request.app)
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _read_queues(app: web.Application) -> None:
    """Queue depths and overdue timers, read at scrape time (one pipeline). Without Redis
    the series are dropped rather than left at stale values."""
    try:
        async with asyncio.timeout(2):
            readings, workers = await read_queues(
                app[redis_key], app[queues_key].key_names(),
                overdue_before_s=time.time() - OVERDUE_S, workers_key=WORKERS_KEY)
    except (redis.RedisError, TimeoutError):
        m.REDIS_UP.set(0)
        m.JOBS.clear()
        m.JOBS_OVERDUE.clear()
        m.WORKERS.set(float("nan"))
        return
    m.REDIS_UP.set(1)
    for reading in readings:
        for state, count in reading.by_state.items():
            m.JOBS.labels(reading.queue, state).set(count)
        m.JOBS_OVERDUE.labels(reading.queue).set(reading.overdue)
    m.WORKERS.set(workers)


# The consumers the relay feeds, whose lag /metrics shows. The sweep's repair consumer stays a
# grace period behind on purpose: its lag says nothing.
RELAYED = tuple(c for c in CONSUMERS if c != REPAIR_CONSUMER)

async def _read_relay_lag(app: web.Application) -> None:
    try:
        async with asyncio.timeout(2):
            change_log = ChangeLog(app[redis_key])
            lags = {consumer: await change_log.lag(consumer) for consumer in RELAYED}
    except (redis.RedisError, TimeoutError):
        for consumer in RELAYED:
            m.RELAY_LAG_EVENTS.labels(consumer).set(float("nan"))
            m.RELAY_LAG_SECONDS.labels(consumer).set(float("nan"))
        return
    for consumer, lag in lags.items():
        m.RELAY_LAG_EVENTS.labels(consumer).set(lag.events)
        m.RELAY_LAG_SECONDS.labels(consumer).set(lag.oldest_s)
