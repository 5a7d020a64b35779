"""Signed out in another tab: the open pages' live regions and previews keep what they
show and say so, instead of pasting the sign-in page (or a refusal) into the page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from config.settings import Settings
from tests.browser.conftest import LiveBridge
from tests.browser.workspace_flow import customer_writes, sign_in, workspace_settings
from tests.conftest import AGENT_TOKEN

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return workspace_settings(redis_url)


def _sign_out_in_another_tab(page: Page, base: str) -> None:
    other = page.context.new_page()
    other.goto(f"{base}/app/")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url(re.compile(r"/app/sign-in"))
    other.close()


def test_the_views_keep_their_list_after_a_sign_out_elsewhere(
        page: Page, live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    customer_writes(base, "Bonjour")
    sign_in(page, base, AGENT_TOKEN)
    rows = page.locator("#views tr[data-ticket]")
    expect(rows).to_have_count(1)
    _sign_out_in_another_tab(page, base)
    customer_writes(base, "Encore moi", sender="whatsapp:+33612345679")  # wakes the stream
    expect(page.get_by_role("alert")).to_have_text("Signed out: reload to sign in",
                                                   timeout=15_000)
    expect(rows).to_have_count(1)  # the list as it was, no sign-in form inside it
    expect(page.locator("#views form, #views header")).to_have_count(0)
    assert page.url == f"{base}/app/"


def test_a_preview_after_a_sign_out_elsewhere_says_so(page: Page,
                                                       live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    customer_writes(base, "Bonjour")
    sign_in(page, base, AGENT_TOKEN)
    page.locator("#views tr[data-ticket] a").click()
    expect(page.locator("#thread")).to_contain_text("Bonjour")
    _sign_out_in_another_tab(page, base)
    page.get_by_role("button", name="Preview").click()
    preview = page.locator("#macro-preview")
    expect(preview).to_have_text("Signed out: reload to sign in")
    expect(preview.locator("form, header, h1")).to_have_count(0)
