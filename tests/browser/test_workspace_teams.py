"""Teams in a real browser: a manager fills a ticket's fields, turns themselves available and
opens a saved view from the tickets page. Every page passes axe's serious/critical checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from config.settings import Settings
from tests.browser.conftest import LiveBridge, assert_accessible, screenshot
from tests.browser.workspace_flow import customer_writes, sign_in, workspace_settings
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return workspace_settings(redis_url)


def _api(base: str, method: str, path: str, token: str = ADMIN_TOKEN,
         body: dict[str, Any] | None = None) -> Any:
    answer = httpx.request(method, f"{base}{path}", json=body, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_a_manager_fills_a_field_and_opens_a_saved_view(page: Page,
                                                        live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    _api(base, "POST", "/api/v1/groups", body={"name": "sn"})
    _api(base, "PUT", "/api/v1/fields/country",
         body={"type": "dropdown", "title": "Country", "options": ["fr", "sn"]})
    _api(base, "PUT", "/api/v1/fields/order_no", body={"type": "number", "title": "Order"})
    token = _api(base, "POST", "/api/v1/agents",
                 body={"name": "mgr", "role": "manager", "groups": ["sn"]})["token"]
    customer_writes(base, "Bonjour, ma commande 4521 ?")
    ticket_id = _api(base, "GET", "/api/v1/tickets")["tickets"][0]["id"]

    sign_in(page, base, token)
    page.goto(f"{base}/app/tickets/{ticket_id}")
    page.get_by_label("Group", exact=True).select_option("sn")
    page.get_by_label("Country").select_option("sn")
    page.get_by_label("Order").fill("4521")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-notice")).to_have_text("Ticket updated")
    expect(page.locator("#ticket-group")).to_have_text("sn")
    expect(page.get_by_label("Order")).to_have_value("4521")
    assert_accessible(page)

    page.get_by_role("button", name="Available for assignment: no").click()
    expect(page.locator(".flash-notice")).to_have_text("You are available for assignment")
    expect(page.get_by_role("button", name="Available for assignment: yes")).to_be_visible()

    # A view on the field just set (saving a view builds it from every ticket; later
    # changes reach it through the relay's teams consumer, which this test does not run).
    view = _api(base, "POST", "/api/v1/views", token=token, body={
        "name": "Senegal", "conditions": {"group": ["sn"], "fields": {"country": "sn"}},
        "shared": True})
    page.goto(f"{base}/app/")
    link = page.get_by_role("link", name="Senegal")
    expect(link).to_be_visible()
    expect(page.locator(f"[data-view='{view['id']}'] + .count")).to_have_text("1")
    assert_accessible(page)
    link.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Senegal")
    assert page.url.endswith(f"/app/saved-views/{view['id']}")
    expect(page.locator(f"tr[data-ticket='{ticket_id}']")).to_contain_text("sn")
    screenshot(page, "workspace-saved-view")
    assert_accessible(page)
