"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium, which
.ci/run installs; Playwright's own browser download cannot reach its CDN here), and axe-core
(axe-playwright-python) for accessibility in the same browser.

The tests are synchronous (Playwright's sync API); the bridge runs behind a real socket in a
background thread (tests/live_server.py). Playwright's sync API keeps an event loop running
in the test's thread while the browser is open, so: the browser is module-scoped (pytest
closes it before a test of another module, which may be async, runs), a browser test takes
no async fixture, and it reaches the store through `run_async` (a loop of its own, in a
thread of its own). Screenshots go to var/test-artefacts/ (git-ignored;
BRIDGE_TEST_ARTEFACTS moves it) so a failing run leaves something to look at.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright

from config.settings import Settings
from tests.live_server import live_server

CHROMIUM = Path(os.environ.get("BRIDGE_TEST_CHROMIUM", "/usr/bin/chromium"))
# Without the networking flags Chromium keeps calling Google's hosts, which this machine's
# closed network refuses; the sandbox needs user namespaces that CI's root shell lacks.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("BRIDGE_TEST_ARTEFACTS", "var/test-artefacts"))
# axe-core's impact levels that fail a test (WCAG 2.1 AA is the bar; "minor" and "moderate"
# findings are reported in the artefacts, not failed on).
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
# The rules axe runs: WCAG 2.0/2.1 A and AA.
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a",
                                                      "wcag21aa"]},
               "resultTypes": ["violations"]}

pytestmark = pytest.mark.browser

T = TypeVar("T")


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work()` to completion on an event loop of its own, in a thread of its own (the
    test's thread has Playwright's loop running), and return its result."""

    async def main() -> T:
        return await work()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package "
                    "(.ci/run does) or point BRIDGE_TEST_CHROMIUM at a Chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies, no storage) and page; a screenshot is kept in
    the artefacts folder whatever the outcome."""
    context = chromium.new_context(locale="en-US")
    page = context.new_page()
    yield page
    try:
        screenshot(page, request.node.name)
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path | None:
    """Save a full-page screenshot as var/test-artefacts/<name>.png (None if the page is
    gone)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120] + ".png")
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception:  # a closed page or crashed target: nothing to keep
        return None
    return path


@dataclass(frozen=True)
class LiveBridge:
    url: str
    settings: Settings


@pytest.fixture
def live_bridge(settings: Settings, sync_redis: redis.Redis) -> Iterator[LiveBridge]:
    """The web app (create_app with the test settings) on a real loopback port, on an empty
    Redis database. Override `settings` in a test module to change them."""
    with live_server(settings) as url:
        yield LiveBridge(url=url, settings=settings)


def accessibility_violations(page: Page, selector: str | None = None) -> list[str]:
    """axe-core's serious and critical WCAG 2.1 A/AA violations on the page (or inside
    `selector`), one line each: rule, impact, the first offending nodes."""
    results = Axe().run(page, context=selector, options=AXE_OPTIONS)
    found = []
    for violation in results.response.get("violations", []):
        if violation.get("impact") in BLOCKING_IMPACTS:
            targets = [" ".join(map(str, node.get("target", [])))
                       for node in violation.get("nodes", [])[:3]]
            found.append(f"{violation['id']} ({violation['impact']}): "
                         f"{violation.get('help', '')} at {targets}")
    return found


def assert_accessible(page: Page, selector: str | None = None) -> None:
    violations = accessibility_violations(page, selector)
    assert not violations, "accessibility violations:\n" + "\n".join(violations)
