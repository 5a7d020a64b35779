"""At a phone's width (375 px) the tables of the macros, operations, saved-view and reports
pages scroll on their own: the page keeps the screen's width."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser

from config.settings import Settings
from tests.browser.conftest import LiveBridge, assert_accessible
from tests.browser.workspace_flow import customer_writes, sign_in, workspace_settings
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.browser

WIDTH = 375


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return workspace_settings(redis_url)


def test_the_tables_fit_a_phone(chromium: Browser, live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    customer_writes(base, "Bonjour")
    made = httpx.post(f"{base}/api/v1/views", timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                      json={"name": "Everything unsolved", "conditions":
                            {"status_below": "solved"}, "shared": True})
    assert made.status_code == 201, made.text
    context = chromium.new_context(locale="en-US", viewport={"width": WIDTH, "height": 800})
    try:
        page = context.new_page()
        sign_in(page, base, ADMIN_TOKEN)
        for path in ("/app/macros", "/app/operations", f"/app/saved-views/{made.json()['id']}",
                     "/app/reports?tz=UTC"):
            page.goto(f"{base}{path}")
            assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, path
            assert_accessible(page)
    finally:
        context.close()
