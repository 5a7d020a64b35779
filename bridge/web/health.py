"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import time

import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.jobs import WORKERS_KEY
from bridge.store.changelog import RELAY_CONSUMER, ChangeLog
from bridge.web import metrics as m
from bridge.web.auth import authorize_metrics
from bridge.web.keys import queues_key, redis_key, settings_key

# A scheduled job this late was not moved by a scheduler (RQ's moves them every second).
OVERDUE_S = 30
# bridge_jobs{state}, in the order _read_queues reads them.
_STATES = ("queued", "dequeuing", "started", "scheduled", "failed")

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up (no dependency checked: a Redis outage must not restart dynos)."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            await request.app[redis_key].ping()
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "redis": type(exc).__name__}, status=503
        )
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
    names = app[queues_key].key_names()
    overdue_before = time.time() - OVERDUE_S
    try:
        async with asyncio.timeout(2):
            async with app[redis_key].pipeline(transaction=False) as pipe:
                for k in names:
                    pipe.llen(k.queued)
                    pipe.llen(k.dequeuing)
                    pipe.zcard(k.started)
                    pipe.zcard(k.scheduled)
                    pipe.zcard(k.failed)
                    pipe.zcount(k.scheduled, "-inf", overdue_before)
                pipe.scard(WORKERS_KEY)
                *per_queue, workers = await pipe.execute()
    except (redis.RedisError, TimeoutError):
        m.REDIS_UP.set(0)
        m.JOBS.clear()
        m.JOBS_OVERDUE.clear()
        m.WORKERS.set(float("nan"))
        return
    m.REDIS_UP.set(1)
    width = len(_STATES) + 1  # the states, then the overdue count
    for i, k in enumerate(names):
        *counts, overdue = per_queue[i * width:(i + 1) * width]
        for state, count in zip(_STATES, counts, strict=True):
            m.JOBS.labels(k.queue, state).set(count)
        m.JOBS_OVERDUE.labels(k.queue).set(overdue)
    m.WORKERS.set(workers)


async def _read_relay_lag(app: web.Application) -> None:
    try:
        async with asyncio.timeout(2):
            lag = await ChangeLog(app[redis_key]).lag(RELAY_CONSUMER)
    except (redis.RedisError, TimeoutError):
        m.RELAY_LAG_EVENTS.set(float("nan"))
        m.RELAY_LAG_SECONDS.set(float("nan"))
        return
    m.RELAY_LAG_EVENTS.set(lag.events)
    m.RELAY_LAG_SECONDS.set(lag.oldest_s)
