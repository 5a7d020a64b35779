"""The widget client's browser tests share one set-up (tests/browser/widget_client/support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.browser.widget_client.support import World, client_world


@pytest.fixture
def world(redis_url: str, sync_redis: redis.Redis) -> Iterator[World]:
    yield from client_world(redis_url)
