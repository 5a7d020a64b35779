"""What the widget client's browser tests share: a bridge with the widget on a site of
another origin under a strict Content-Security-Policy, its pages, and conditions to wait
for (never durations)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from playwright.sync_api import (
    BrowserContext,
    Page,
    Route,
    ViewportSize,
)

from tests.browser.widget_support import (
    WAIT_MS,
    Agent,
    Served,
    bridge_and_site,
    host_page,
    site_jwt,
    widget,
)

PHONE: ViewportSize = {"width": 375, "height": 667}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class World:
    bridge: Served
    site: Served
    pages: dict[str, str]  # the site's pages: a test may add some
    agent: Agent
    redis_url: str

    def url(self, name: str = "/") -> str:
        return self.site.url + name

    def add_page(self, name: str, attributes: str) -> str:
        self.pages[name] = host_page(self.bridge.url, attributes=attributes)
        return self.url(name)


def client_world(redis_url: str) -> Iterator[World]:
    """A test's World (its modules wrap this in their `world` fixture)."""
    def pages(bridge_url: str) -> dict[str, str]:
        return {"/": host_page(bridge_url),
                "/ada": host_page(bridge_url,
                                  attributes=f"data-user-jwt='{site_jwt('ada-1')}'"),
                "/bob": host_page(bridge_url,
                                  attributes=f"data-user-jwt='{site_jwt('bob-2')}'")}

    with bridge_and_site(redis_url, pages) as (_, served, shop, served_pages):
        yield World(served, shop, served_pages, Agent(served.url), redis_url)


def until(check: Callable[[], bool], what: str, page: Page | None = None) -> None:
    """Wait for `check()`; with `page`, the page's events (requests, frames) are taken in
    meanwhile (Playwright delivers them only while one of its calls runs)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if page is None:
            time.sleep(0.05)
        else:
            page.wait_for_timeout(50)


def event_key(key: str) -> tuple[int, ...]:
    match = re.fullmatch(r"(\d+)-(\d+)_(\d+)", key)
    assert match, key
    return tuple(int(part) for part in match.groups())


def keys_shown(page: Page) -> list[str]:
    return list(widget(page).locator(".log > [data-key]").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('data-key'))"))


def bodies(world: World, address: str | None = None) -> list[str]:
    """Every message body the bridge stored from visitors (of one contact address), oldest
    first."""
    found = []
    for ticket in world.agent.tickets():
        if address is None or ticket["contact"]["address"] == address:
            found += [e["body"] for e in reversed(world.agent.events(ticket["id"]))
                      if e["type"] == "customer_message"]
    return found


def block(target: Page | BrowserContext, path: str) -> None:
    """The bridge's answers to one call fail as a network error would."""
    def refuse(route: Route) -> None:
        route.abort()

    target.route(f"**/widget/v1/{path}", refuse)


# ------------------------------------------------------------------ order and unread count
