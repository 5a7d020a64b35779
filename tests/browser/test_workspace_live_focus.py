"""A live refresh keeps the keyboard where it was: the focused link of the views or the
thread is focused again in the new content (not the page's body), and the refresh is
announced in a few words by a status element instead of a live region reading the whole
list out."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from config.settings import Settings
from tests.browser.conftest import LiveBridge, assert_accessible
from tests.browser.workspace_flow import customer_writes, sign_in, workspace_settings
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN

pytestmark = pytest.mark.browser

FOCUSED_HREF = "document.activeElement.getAttribute('href')"
FOCUS_IN = "selector => document.querySelector(selector).contains(document.activeElement)"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return workspace_settings(redis_url)


def note(base: str, ticket_id: str, body: str) -> None:
    answer = httpx.post(f"{base}/api/v1/tickets/{ticket_id}/notes", json={"body": body},
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert answer.status_code in (200, 201), answer.text


def test_a_focused_ticket_link_stays_focused_across_a_refresh(
        page: Page, live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    customer_writes(base, "Bonjour", sender="whatsapp:+33612345601")
    customer_writes(base, "Salut", sender="whatsapp:+33612345602")
    sign_in(page, base, AGENT_TOKEN)
    rows = page.locator("#views tr[data-ticket]")
    expect(rows).to_have_count(2)
    link = rows.last.locator("a")
    href = link.get_attribute("href")
    link.focus()
    customer_writes(base, "Me voici", sender="whatsapp:+33612345603")
    expect(rows).to_have_count(3, timeout=15_000)
    assert page.evaluate(FOCUSED_HREF) == href
    assert page.evaluate(FOCUS_IN, "#views")
    expect(page.locator("#views-status")).to_have_text("Tickets updated")
    # The list itself is not a live region (it was read out whole at each refresh).
    expect(page.locator("[aria-live]")).to_have_count(0)
    assert_accessible(page)


def test_the_thread_keeps_a_focused_link_across_a_refresh(
        page: Page, live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    customer_writes(base, "Bonjour")
    ticket_id = "1"
    for n in range(30):  # an older page, so that the thread has a link
        note(base, ticket_id, f"note {n}")
    sign_in(page, base, AGENT_TOKEN)
    page.goto(f"{base}/app/tickets/{ticket_id}")
    older = page.locator("#thread a.older")
    older.focus()
    note(base, ticket_id, "the newest note")
    expect(page.locator("#thread")).to_contain_text("the newest note", timeout=15_000)
    assert page.evaluate("document.activeElement.id") == "older-messages"
    assert page.evaluate(FOCUS_IN, "#thread")
    expect(page.locator("#thread-status")).to_have_text("Thread updated")
    assert_accessible(page)
