"""The chat widget in Chromium, embedded in a site's page on another origin served with a
strict Content-Security-Policy, as a site owner embeds it; the agent answers through the
API. Accessibility is checked with axe (no serious or critical violations)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from config.settings import Settings
from tests.browser.conftest import assert_accessible, screenshot
from tests.browser.widget_support import (
    WAIT_MS,
    Agent,
    Served,
    bridge_and_site,
    free_port,
    host_page,
    open_chat,
    send_survey,
    site,
    site_jwt,
    strict_csp,
    thread_texts,
    wait_for_text,
    widget,
    write,
)
from tests.faults.conftest import start_web

pytestmark = pytest.mark.browser


@dataclass
class World:
    bridge: Served
    site: Served
    settings: Settings
    agent: Agent
    redis_url: str

    def page_url(self, name: str = "/") -> str:
        return self.site.url + name


@pytest.fixture
def world(redis_url: str, sync_redis: redis.Redis) -> Iterator[World]:
    def pages(bridge_url: str) -> dict[str, str]:
        return {"/": host_page(bridge_url),
                "/poll": host_page(bridge_url, attributes="data-transport='poll'"),
                "/fr": host_page(bridge_url, attributes="data-lang='fr'"),
                "/ada": host_page(bridge_url,
                                  attributes=f"data-user-jwt='{site_jwt('ada-1')}'")}

    with bridge_and_site(redis_url, pages) as (settings, served, shop, _):
        yield World(served, shop, settings, Agent(served.url), redis_url)


def csp_violations(page: Page) -> list[str]:
    found: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            found.append(message.text)

    page.on("console", seen)
    return found


def first_message(world: World, page: Page, body: str) -> dict[str, Any]:
    """The visitor opens the chat on the site's page and writes; the ticket it opened."""
    page.goto(world.page_url())
    open_chat(page)
    write(page, body)
    (ticket,) = world.agent.wait_tickets(1)
    return ticket


def solve_and_survey(world: World, ticket_id: str) -> None:
    """The agent solves the ticket and the survey goes out (the worker's job, run here)."""
    world.agent.http.patch(f"/api/v1/tickets/{ticket_id}", json={"status": "solved"})
    send_survey(world.redis_url, ticket_id)


def test_a_visitor_message_becomes_a_ticket_and_the_reply_shows_without_a_reload(
        world: World, page: Page) -> None:
    violations = csp_violations(page)
    ticket = first_message(world, page, "Where is my parcel?")
    assert ticket["channel"] == "widget" and ticket["status"] == "new"
    world.agent.reply(ticket["id"], "It left the warehouse this morning.")
    wait_for_text(page, "It left the warehouse this morning.")
    assert thread_texts(page) == ["Where is my parcel?", "It left the warehouse this morning."]
    assert not violations, violations
    assert_accessible(page)


def test_the_typing_notice_goes_when_the_agents_message_arrives(
        world: World, page: Page) -> None:
    ticket = first_message(world, page, "Are you there?")
    notice = widget(page).locator(".typing")
    world.agent.typing(ticket["id"])
    expect(notice).to_have_text("An agent is typing…")
    world.agent.reply(ticket["id"], "Yes, looking at it now.")
    wait_for_text(page, "Yes, looking at it now.")
    # Shown for 6 s after the last typing signal otherwise: the reply itself clears it.
    assert notice.inner_text() == ""


def test_the_widget_is_keyboard_usable_and_announces_messages(
        world: World, page: Page) -> None:
    page.goto(world.page_url())
    bubble = widget(page).locator("button.bubble")
    bubble.wait_for(timeout=WAIT_MS)
    assert bubble.get_attribute("aria-label") == "Open chat"
    bubble.focus()
    page.keyboard.press("Enter")
    field = page.get_by_label("Message")
    assert field.evaluate("el => el === el.getRootNode().activeElement")
    assert widget(page).locator("[role=log]").get_attribute("aria-live") == "polite"
    assert widget(page).locator("[role=dialog]").get_attribute("aria-labelledby")
    page.keyboard.press("Escape")
    assert bubble.get_attribute("aria-expanded") == "false"
    assert bubble.evaluate("el => el === el.getRootNode().activeElement")
    assert_accessible(page)


def test_french_strings_follow_the_page(world: World, page: Page) -> None:
    page.goto(world.page_url("/fr"))
    bubble = widget(page).locator("button.bubble")
    bubble.wait_for(timeout=WAIT_MS)
    assert bubble.get_attribute("aria-label") == "Ouvrir la discussion"


def test_an_agent_reply_while_closed_shows_an_unread_count_and_is_reported_read(
        world: World, page: Page) -> None:
    ticket = first_message(world, page, "hello")
    widget(page).locator("button.close").click()
    reply = world.agent.reply(ticket["id"], "Hi there")
    badge = widget(page).locator(".badge")
    badge.wait_for(state="visible", timeout=WAIT_MS)
    assert badge.inner_text() == "1"
    open_chat(page)
    assert badge.is_hidden()
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        (event,) = [e for e in world.agent.events(ticket["id"]) if e["id"] == reply["id"]]
        if event["delivery"] == "read":
            break
        time.sleep(0.1)
    assert event["delivery"] == "read"


def test_session_end_notice_then_a_new_ticket(world: World, page: Page) -> None:
    ticket = first_message(world, page, "first question")
    world.agent.end_session(ticket["id"])
    wait_for_text(page, "The agent ended this conversation. A new message starts a new one.")
    write(page, "another question")
    newest, old = world.agent.wait_tickets(2)
    assert old["id"] == ticket["id"] and newest["id"] != ticket["id"]
    assert newest["status"] == "new"


def test_a_csat_button_records_the_rating_without_reopening(world: World, page: Page) -> None:
    ticket = first_message(world, page, "thanks")
    solve_and_survey(world, ticket["id"])
    buttons = widget(page).locator(".csat button")
    buttons.first.wait_for(timeout=WAIT_MS)
    assert_accessible(page)
    buttons.first.click()  # the shipped survey: 5 (Good), 3, 1
    widget(page).locator(".log .notice").get_by_text("Thank you!", exact=False).wait_for(
        timeout=WAIT_MS)
    assert widget(page).locator(".pending").count() == 0  # the answer is the notice
    after = world.agent.ticket(ticket["id"])
    assert after["status"] == "solved"
    assert after["csat"]["rating"] == 5
    assert len(world.agent.tickets()) == 1


def test_answering_one_survey_leaves_an_older_tickets_survey_open(
        world: World, page: Page) -> None:
    """Each survey answers for its ticket: answering the newer one disabled every survey in
    the widget, though an older survey's button still rates its own ticket."""
    first = first_message(world, page, "first problem")
    solve_and_survey(world, first["id"])
    surveys = widget(page).locator(".csat")
    surveys.first.wait_for(timeout=WAIT_MS)
    world.agent.http.patch(f"/api/v1/tickets/{first['id']}", json={"status": "closed"})
    write(page, "second problem")
    second, _ = world.agent.wait_tickets(2)
    solve_and_survey(world, second["id"])
    surveys.nth(1).wait_for(timeout=WAIT_MS)
    surveys.nth(1).locator("button").first.click()
    widget(page).locator(".log .notice").get_by_text("Thank you!", exact=False).wait_for(
        timeout=WAIT_MS)
    expect(surveys.nth(1).locator("button").first).to_be_disabled()
    older = surveys.first.locator("button").last  # 1 (Bad)
    expect(older).to_be_enabled()
    older.click()
    deadline = time.monotonic() + WAIT_MS / 1000
    while (world.agent.ticket(first["id"])["csat"] or {}).get("rating") != 1:
        assert time.monotonic() < deadline, "the older survey's rating was not recorded"
        time.sleep(0.1)
    assert world.agent.ticket(second["id"])["csat"]["rating"] == 5


def test_a_restarted_web_process_loses_and_doubles_nothing(world: World, page: Page) -> None:
    ticket = first_message(world, page, "before the restart")
    world.agent.reply(ticket["id"], "reply one")
    wait_for_text(page, "reply one")
    world.bridge.stop()
    write(page, "while it is down")  # kept in the widget's outbox, sent again later
    world.bridge.start()
    world.agent.reply(ticket["id"], "reply two")
    wait_for_text(page, "reply two")
    wait_for_text(page, "while it is down")
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline and widget(page).locator(".pending").count():
        time.sleep(0.1)
    expected = ["before the restart", "reply one", "while it is down", "reply two"]
    assert sorted(thread_texts(page)) == sorted(expected)
    bodies = [e["body"] for e in world.agent.events(ticket["id"])]
    assert sorted(bodies) == sorted(expected)
    page.reload()
    open_chat(page)
    wait_for_text(page, "reply two")
    assert sorted(thread_texts(page)) == sorted(expected)


def test_a_reply_posted_to_one_process_reaches_a_visitor_on_another(
        world: World, page: Page) -> None:
    """The visitor on this test's bridge; the agent on a `bridge serve` process."""
    other = start_web(world.redis_url)
    try:
        ticket = first_message(world, page, "hello from process one")
        Agent(other.url).reply(ticket["id"], "answered by process two")
        wait_for_text(page, "answered by process two")
    finally:
        other.stop()


def test_long_polling_carries_the_conversation_where_websockets_are_blocked(
        world: World, page: Page) -> None:
    page.route_web_socket("**/widget/v1/ws", lambda ws: ws.close())
    ticket = first_message(world, page, "behind a strict proxy")
    world.agent.reply(ticket["id"], "polled reply")
    wait_for_text(page, "polled reply")
    assert thread_texts(page) == ["behind a strict proxy", "polled reply"]


def test_a_page_on_a_refused_origin_says_it_is_not_connected_and_stores_nothing(
        world: World, page: Page) -> None:
    """The bridge refuses an origin outside BRIDGE_WIDGET_ORIGINS without a CORS answer,
    so the script cannot tell it from a network failure: the visitor sees the chat is not
    connected (not a message forever "Sending…" and nothing else), and the site owner's
    console names the setting."""
    bridge_url = world.bridge.url
    stranger = site(free_port(), {"/": host_page(bridge_url)}, strict_csp(bridge_url))
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    try:
        page.goto(stranger.url + "/")
        open_chat(page)
        write(page, "anyone there?")
        expect(widget(page).locator(".status")).to_have_text(
            "Connection lost, reconnecting…", timeout=WAIT_MS)
        expect(widget(page).locator(".log .pending .meta")).to_have_text("Sending…")
        hint = [w for w in warnings if "BRIDGE_WIDGET_ORIGINS" in w]
        assert hint and stranger.url in hint[0], warnings
        assert world.agent.tickets() == []
        assert_accessible(page)
    finally:
        stranger.stop()


def test_a_logged_in_user_sees_one_thread_in_two_contexts(
        chromium: Browser, world: World) -> None:
    contexts = [chromium.new_context(locale="en-US") for _ in range(2)]
    try:
        first, second = (context.new_page() for context in contexts)
        first.goto(world.page_url("/ada"))
        open_chat(first)
        write(first, "from my laptop")
        (ticket,) = world.agent.wait_tickets(1)
        second.goto(world.page_url("/ada"))
        open_chat(second)
        wait_for_text(second, "from my laptop")
        write(second, "from my phone")
        wait_for_text(first, "from my phone")
        world.agent.reply(ticket["id"], "one answer for both")
        wait_for_text(first, "one answer for both")
        wait_for_text(second, "one answer for both")
        assert len(world.agent.tickets()) == 1
        screenshot(second, "widget_jwt_second_context")
    finally:
        for context in contexts:
            context.close()
