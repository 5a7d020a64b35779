"""The admin's pages in a real browser: a macro edited with an error (its line shown), fixed,
rolled back; the reports page with its charts and the CSV download."""

from __future__ import annotations

import re

import pytest
import redis.asyncio
from playwright.sync_api import Browser, Page, expect

from bench import reports as bench_reports
from tests.browser.conftest import LiveBridge, assert_accessible, run_async
from tests.browser.workspace_flow import sign_in
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.browser


def test_an_admin_edits_a_macro_sees_the_error_line_and_rolls_back(
        page: Page, live_bridge: LiveBridge) -> None:
    base = live_bridge.url
    sign_in(page, base, ADMIN_TOKEN)
    page.get_by_role("link", name="Macros").first.click()
    page.get_by_role("link", name="greeting").click()
    assert_accessible(page)

    english = page.get_by_label("Text (en)")
    english.fill("Hello {{ contact.first_name }},\nwe are on it {{ agent.name }")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#macro-preview .problems")).to_contain_text("line 2")
    page.get_by_role("button", name="Save macro").click()
    expect(page.locator("#macro-problems")).to_contain_text("en, line 2")
    assert_accessible(page)

    page.get_by_label("Text (en)").fill("Hello {{ contact.first_name }}, we are on it.")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#macro-preview .preview-body")).to_contain_text("we are on it.")
    page.get_by_role("button", name="Save macro").click()
    expect(page.locator(".flash-notice")).to_have_text("Saved as version 1")

    page.get_by_role("link", name="v1").click()
    expect(page.locator("#diff .diff-add").first).to_be_visible()
    page.go_back()
    page.get_by_role("button", name="Roll back to this version v0").click()
    expect(page.locator(".flash-notice")).to_have_text("Version 0 restored as version 2")
    expect(page.get_by_label("Text (en)")).not_to_have_value(
        "Hello {{ contact.first_name }}, we are on it.")


def test_the_reports_page_and_its_csv(page: Page, live_bridge: LiveBridge) -> None:
    async def history() -> None:
        client = redis.asyncio.Redis.from_url(live_bridge.settings.redis_url)
        try:
            await bench_reports.fill(client, 300, bench_reports.SMOKE, seed=3)
        finally:
            await client.aclose()

    run_async(history)  # 300 tickets over the 32 days before 2026-11-01
    base = live_bridge.url
    sign_in(page, base, ADMIN_TOKEN)
    page.get_by_role("link", name="Reports").click()
    page.get_by_label("From").fill("2026-10-02")
    page.get_by_label("To").fill("2026-11-01")
    page.get_by_label("Time zone").select_option("Europe/Paris")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("svg.chart")).to_have_count(2)
    assert int(page.locator("#fig-created").inner_text()) > 200
    assert_accessible(page)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    path = download_info.value.path()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("section,name,value") and "period,time_zone,Europe/Paris" in text


def test_the_operations_page(page: Page, live_bridge: LiveBridge) -> None:
    sign_in(page, live_bridge.url, ADMIN_TOKEN)
    page.get_by_role("link", name="Operations").click()
    expect(page.get_by_role("heading", name="Queue depths")).to_be_visible()
    expect(page.locator("#workers")).to_have_text("0")
    assert_accessible(page)


def test_reports_open_in_the_browsers_time_zone(chromium: Browser,
                                                live_bridge: LiveBridge) -> None:
    context = chromium.new_context(locale="fr-FR", timezone_id="America/New_York")
    try:
        page = context.new_page()
        sign_in(page, live_bridge.url, ADMIN_TOKEN, button="Se connecter",
                label="Votre jeton d'agent ou d'administrateur")
        page.goto(f"{live_bridge.url}/app/reports")
        expect(page).to_have_url(re.compile(r"tz=America%2FNew_York"))
        expect(page.get_by_label("Fuseau horaire")).to_have_value("America/New_York")
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        assert_accessible(page)
    finally:
        context.close()
