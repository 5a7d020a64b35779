"""The embedded redis-server's durability settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from bridge.store.embedded import EmbeddedRedis


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_the_aof_fsync_policy_is_the_one_asked_for(tmp_path: Path, appendfsync: str) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendfsync=appendfsync) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("appendfsync") == {"appendfsync": appendfsync}
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            client.close()


def test_an_unknown_fsync_policy_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appendfsync"):
        EmbeddedRedis(tmp_path / "redis", appendfsync="sometimes")
    assert not (tmp_path / "redis").exists()
