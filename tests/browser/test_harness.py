"""The browser harness itself: Chromium starts, reaches the live bridge, and the
accessibility check fails on a page that breaks WCAG (so a passing check means something)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from bridge.store.tickets import TicketStore
from tests.browser.conftest import (
    LiveBridge,
    accessibility_violations,
    assert_accessible,
    run_async,
)
from tests.conftest import AGENT_TOKEN, CONTACT_KEY
from tests.factories import ids, inbound

pytestmark = pytest.mark.browser


def test_chromium_reaches_the_live_bridge(page: Page, live_bridge: LiveBridge) -> None:
    response = page.goto(f"{live_bridge.url}/healthz")
    assert response is not None and response.status == 200


def test_the_store_is_reachable_beside_the_browser(page: Page, live_bridge: LiveBridge) -> None:
    """A browser test reaches the store through run_async (Playwright's loop is running)."""
    import redis.asyncio

    async def seed() -> str:
        client = redis.asyncio.Redis.from_url(live_bridge.settings.redis_url)
        try:
            store = TicketStore(client, contact_key=CONTACT_KEY.encode())
            return ids(await inbound(store, "from the test"))
        finally:
            await client.aclose()

    ticket_id = run_async(seed)
    response = page.request.get(f"{live_bridge.url}/api/v1/tickets/{ticket_id}",
                                headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert response.status == 200 and response.json()["id"] == ticket_id


def test_accessibility_check_flags_a_broken_page(page: Page) -> None:
    page.set_content("<html><body><img src='x.png'><button></button></body></html>")
    violations = accessibility_violations(page)
    rules = {line.split(" ", 1)[0] for line in violations}
    assert {"image-alt", "button-name"} <= rules
    with pytest.raises(AssertionError):
        assert_accessible(page)


def test_accessibility_check_passes_a_sound_page(page: Page) -> None:
    page.set_content("<!doctype html><html lang='en'><head><title>ok</title></head><body>"
                     "<main><h1>Fine</h1><img src='x.png' alt='A chart'>"
                     "<button>Send</button></main></body></html>")
    assert_accessible(page)
