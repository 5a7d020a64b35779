"""bench/aof.py: while a benchmark runs, Redis rewrites its append-only file only between
phases, by Redis's own rule, and its setting comes back afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from bench.aof import RewritesBetweenPhases
from bridge.store.embedded import EmbeddedRedis

_MIN_SIZE = 1 << 20  # 1 MB: Redis's smallest useful threshold for a quick test
_VALUE = b"x" * 8192


def _write(client: redis.Redis, count: int, prefix: str) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.set(f"{prefix}:{i}", _VALUE)
    pipe.execute()


def _forks(client: redis.Redis) -> int:
    return int(client.info("stats")["total_forks"])


def test_rewrites_fall_between_phases_and_the_setting_comes_back(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("auto-aof-rewrite-min-size", _MIN_SIZE)
        with RewritesBetweenPhases(server.url) as aof:
            assert aof.between_phases() is None  # an empty file: not due
            forks = _forks(client)
            _write(client, 300, "phase1")  # 2.4 MB: Redis alone would rewrite now
            time.sleep(0.5)  # its cron checks every 100 ms
            assert _forks(client) == forks  # ...but not during a phase
            assert client.config_get("auto-aof-rewrite-percentage") == {
                "auto-aof-rewrite-percentage": "0"}
            assert aof.due()
            elapsed = aof.between_phases()
            assert elapsed is not None and elapsed > 0
            assert _forks(client) == forks + 1
            info = client.info("persistence")
            assert not info["aof_rewrite_in_progress"]  # waited for it to finish
            assert int(info["aof_base_size"]) == int(info["aof_current_size"])
            assert not aof.due()
            assert aof.between_phases() is None
            assert aof.forks_in_phases() == 0
            assert aof.rewrites_s == [elapsed]
        assert client.config_get("auto-aof-rewrite-percentage") == {
            "auto-aof-rewrite-percentage": "100"}
        # Redis's own rule is back: doubling the file forks without being asked.
        _write(client, 600, "after")
        deadline = time.monotonic() + 10
        while _forks(client) == forks + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _forks(client) == forks + 2
        client.close()


def test_a_rewrite_during_a_phase_is_counted(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        with RewritesBetweenPhases(server.url) as aof:
            client.bgrewriteaof()  # someone else's, mid-phase
            aof.between_phases()
            assert aof.forks_in_phases() == 1
        client.close()


def test_without_an_append_only_file_nothing_is_ever_due(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        with RewritesBetweenPhases(server.url) as aof:
            _write(client, 300, "k")
            assert not aof.due()
            assert aof.between_phases() is None
        client.close()
