"""Redis clients from settings: TLS options for managed Redis, fail-fast pools."""

from __future__ import annotations

import redis.asyncio

from bridge.store.connection import async_redis, sync_redis
from tests.conftest import make_settings


async def test_rediss_url_with_self_signed_certificates() -> None:
    settings = make_settings("rediss://:secret@redis.example.com:6380/0",
                             redis_ssl_cert_reqs="none")
    client = async_redis(settings)
    pool = client.connection_pool
    assert pool.connection_class is redis.asyncio.SSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    await client.aclose()
    sync_client = sync_redis(settings)
    assert sync_client.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
    sync_client.close()


async def test_plain_url_has_no_tls_options() -> None:
    client = async_redis(make_settings("redis://127.0.0.1:6379/0"))
    assert "ssl_cert_reqs" not in client.connection_pool.connection_kwargs
    assert client.connection_pool.max_connections == 64
    await client.aclose()
