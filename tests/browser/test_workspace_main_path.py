"""The agent's main path in a real browser: sign in, a new WhatsApp ticket appears live in
"new", open it, reply (the reply reaches the outbox), apply a macro after its preview,
solve, and the CSAT survey goes out. Every page passes axe's serious/critical checks."""

from __future__ import annotations

import re

import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from config.settings import Settings
from tests.browser.conftest import LiveBridge, assert_accessible, screenshot
from tests.browser.workspace_flow import (
    customer_writes,
    outbox,
    run_workers,
    sign_in,
    workspace_settings,
)
from tests.conftest import AGENT_TOKEN

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return workspace_settings(redis_url)


def test_an_agent_works_a_new_whatsapp_ticket(page: Page, live_bridge: LiveBridge,
                                              sync_redis: redis.Redis) -> None:
    base = live_bridge.url
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/app/")
    expect(page).to_have_url(re.compile(r"/app/sign-in"))
    assert_accessible(page)
    sign_in(page, base, AGENT_TOKEN)
    new_view = page.locator("section[aria-labelledby=view-new]")
    expect(new_view.locator("tr[data-ticket]")).to_have_count(0)
    assert_accessible(page)

    # A customer writes: the ticket shows up in "new" without a reload.
    customer_writes(base, "Bonjour, où est ma commande ?")
    row = new_view.locator("tr[data-ticket]")
    expect(row).to_have_count(1, timeout=15_000)
    expect(page.locator("[data-count=new]")).to_have_text("1")
    screenshot(page, "workspace-views-live")
    row.get_by_role("link").click()

    expect(page.locator("#thread")).to_contain_text("Bonjour, où est ma commande ?")
    expect(page.locator(".window-open")).to_be_visible()
    assert_accessible(page)
    customer_writes(base, "Le numéro est 4521.")  # appears without a reload
    expect(page.locator("#thread li.inbound")).to_have_count(2, timeout=15_000)
    expect(page.locator("#thread")).to_contain_text("Le numéro est 4521.")

    page.get_by_label("Message to the customer").fill("Elle part demain matin.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator(".flash-notice")).to_have_text("Reply queued")
    run_workers(live_bridge.settings.redis_url)
    assert "Elle part demain matin." in outbox(sync_redis).values()
    expect(page.locator("#thread li.outbound")).to_contain_text("Elle part demain matin.")

    page.get_by_label("Macros").select_option("greeting")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#macro-preview .preview-body")).to_be_visible()
    page.get_by_role("button", name="Apply", exact=True).click()
    expect(page.locator(".flash-notice")).to_contain_text("Macro greeting applied")

    page.get_by_label("Status").select_option("solved")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#ticket-status")).to_have_text("solved")
    run_workers(live_bridge.settings.redis_url)  # the trigger, then the survey's send
    survey = page.locator("#thread li[data-type=csat_sent]")
    expect(survey).to_have_count(1, timeout=15_000)
    assert survey.get_attribute("data-event") in outbox(sync_redis)
    assert_accessible(page)
    assert console_errors == []  # no failed load (a favicon's 404 was one), no script error


def test_the_ticket_lists_fit_a_phone(chromium: Browser, live_bridge: LiveBridge) -> None:
    """At a phone's width (390 px) the page stays the screen's width: a list wider than it
    scrolls on its own, and the page passes axe there too."""
    base = live_bridge.url
    context = chromium.new_context(locale="en-US", viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        for n in range(3):
            customer_writes(base, "Bonjour", sender=f"whatsapp:+3361234560{n}")
        sign_in(page, base, AGENT_TOKEN)
        expect(page.locator("section[aria-labelledby=view-new] tr[data-ticket]")
               ).to_have_count(3, timeout=15_000)
        screenshot(page, "workspace-views-phone")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert_accessible(page)
    finally:
        context.close()
