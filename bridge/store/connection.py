"""Redis clients built from Settings: an asyncio one for the web process, a sync one for RQ."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from config.settings import Settings


def _ssl_kwargs(settings: Settings) -> dict[str, Any]:
    if settings.redis_url.startswith("rediss://"):
        # Heroku-style managed Redis presents a self-signed certificate: REDIS_SSL_CERT_REQS=none.
        return {"ssl_cert_reqs": settings.redis_ssl_cert_reqs}
    return {}


def async_redis(settings: Settings, url: str | None = None) -> redis.asyncio.Redis:
    """A blocking pool: under a burst, requests wait up to redis_pool_timeout_s for a
    connection and then fail (the web layer answers 503) instead of opening without bound."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url or settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        # Fail fast: a webhook that cannot reach Redis answers 503 and the provider retries;
        # redis-py 8's default (10 retries, up to 1 s apart) would hold requests ~10 s.
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
        socket_connect_timeout=1,
        socket_timeout=5,
        health_check_interval=30,
        **_ssl_kwargs(settings),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def sync_redis(settings: Settings, url: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(
        url or settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
        **_ssl_kwargs(settings),
    )
