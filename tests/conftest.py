"""Shared fixtures: a real Redis (embedded, or REDIS_URL when set), settings, the store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.core.messages import Channel, contact_id_for
from bridge.core.policy import ChannelPolicy
from bridge.store.embedded import EmbeddedRedis
from bridge.store.tickets import TicketStore
from config.settings import Secret, Settings

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
# Production refuses bearer tokens under 32 characters (fault tests start `bridge serve`).
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
AGENT_TOKEN = "agent-token-for-tests-0123456789abcdef"
METRICS_TOKEN = "metrics-token-for-tests-0123456789abcdef"
CONTACT_KEY = "contact-key-for-tests-0123456789abcdef"

Client = TestClient[Any, Any]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tests wipe this Redis database: with REDIS_URL set, point it at a scratch one. Under
    pytest-xdist each worker has a Redis of its own (embedded), or with REDIS_URL a database
    of its own (worker gwN uses database N + 1 of that server), so no worker flushes what
    another is testing."""
    url = os.environ.get("REDIS_URL")
    if url:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        if worker.startswith("gw"):
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(path=f"/{int(worker[2:]) + 1}"))
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server with AOF, for tests that kill, stop or restart it. `appendfsync
    always`: these tests prove the bridge loses nothing Redis acknowledged as written. With
    `everysec` Redis 6.2 (the embedded one) may acknowledge writes it has not written yet
    while a slow fsync of the disk is still running (it postpones the AOF write up to 2 s),
    and a SIGKILL then loses them: a property of Redis and the disk (README, Production),
    which made these tests fail on a slow CI disk."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
async def aredis(redis_url: str, sync_redis: redis.Redis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(aredis: redis.asyncio.Redis) -> TicketStore:
    return TicketStore(aredis, contact_key=CONTACT_KEY.encode())


def make_settings(redis_url: str = "", **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "public_base_url": "https://bridge.example.com",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": Secret(AUTH_TOKEN),
        "twilio_whatsapp_from": "whatsapp:+14155238886",
        "admin_token": Secret(ADMIN_TOKEN),
        "agent_tokens": {"alice": Secret(AGENT_TOKEN)},
        "metrics_token": Secret(METRICS_TOKEN),
        "secret": Secret("widget-secret-for-tests"),
        "contact_key": Secret(CONTACT_KEY),
        "data_dir": Path("var-test"),
        "policies": {c: ChannelPolicy() for c in Channel},
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def contact_id(channel: Channel | str, address: str) -> str:
    """The id the tests' contact key gives an address (what the store files it under)."""
    return contact_id_for(CONTACT_KEY.encode(), channel, address)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
def app(settings: Settings) -> web.Application:
    """The web app `client` talks to: the real app factory. A module that tests another app
    (tests/macro_app.py) or other settings overrides this fixture or `settings`."""
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application, sync_redis: redis.Redis) -> Client:
    """A test client for `app`, on an empty Redis database."""
    test_client: Client = await aiohttp_client(app)
    return test_client
