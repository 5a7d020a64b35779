"""The browser harness itself: Chromium starts, reaches the live bridge, and the
accessibility check fails on a page that breaks WCAG (so a passing check means something)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import LiveBridge, accessibility_violations, assert_accessible

pytestmark = pytest.mark.browser


def test_chromium_reaches_the_live_bridge(page: Page, live_bridge: LiveBridge) -> None:
    response = page.goto(f"{live_bridge.url}/healthz")
    assert response is not None and response.status == 200


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
