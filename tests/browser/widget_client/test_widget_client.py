"""The widget's browser client where QA found it wrong (1/2: the thread's order and unread
count, one store per identity, tabs, a refused user JWT): Chromium against a real bridge,
the widget on a site of another origin under a strict Content-Security-Policy, as in
test_widget.py. Waits are on conditions, never on durations."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import (
    Page,
    expect,
)

from tests.browser.widget_client.support import (
    World,
    block,
    bodies,
    event_key,
    keys_shown,
    until,
)
from tests.browser.widget_support import (
    WAIT_MS,
    open_chat,
    send_survey,
    site_jwt,
    thread_texts,
    wait_for_text,
    widget,
    write,
)

pytestmark = pytest.mark.browser


def test_a_burst_read_back_after_a_reload_is_shown_in_event_order(
        world: World, page: Page) -> None:
    """The newest page of history, then the socket's look-back (2 s behind the cursor)
    brings the burst's older events: each goes to its place, not to the bottom."""
    page.goto(world.url())
    open_chat(page)
    write(page, "start")
    (ticket,) = world.agent.wait_tickets(1)
    wait_for_text(page, "start")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: world.agent.reply(ticket["id"], f"r{n}"), range(80)))
    page.reload()
    open_chat(page)
    wait_for_text(page, "r79")
    wait_for_text(page, "start")  # older than the first page of history: the look-back's
    until(lambda: len(keys_shown(page)) == 81, "the whole burst")
    keys = keys_shown(page)
    assert keys == sorted(keys, key=event_key)
    thread = world.agent.http.get(f"/api/v1/tickets/{ticket['id']}/events",
                                  params={"limit": 200}).json()["events"]  # newest first
    stored = [e["body"] for e in reversed(thread)
              if e["type"] in ("customer_message", "agent_reply")]
    assert len(stored) == 81 and thread_texts(page) == stored


def test_the_unread_count_counts_agent_messages_only(world: World, page: Page) -> None:
    """Not the session-end notice, the survey or the visitor's own rating."""
    page.goto(world.url())
    open_chat(page)
    write(page, "hello")
    (ticket,) = world.agent.wait_tickets(1)
    widget(page).locator("button.close").click()
    world.agent.end_session(ticket["id"])
    send_survey(world.redis_url, ticket["id"])
    csat = widget(page).locator(".log .csat")
    csat.wait_for(state="attached", timeout=WAIT_MS)
    badge = widget(page).locator(".badge")
    assert badge.is_hidden()
    page.reload()  # the count read from history, as after a reload
    widget(page).locator(".log .csat").wait_for(state="attached", timeout=WAIT_MS)
    assert badge.is_hidden()
    # In another tab the visitor rates and asks again; an agent answers: one unread
    # message here.
    other = page.context.new_page()
    other.goto(world.url())
    open_chat(other)
    widget(other).locator(".csat button").first.click()
    widget(other).locator(".log .notice").get_by_text("Thank you!").wait_for(timeout=WAIT_MS)
    write(other, "And my other order?")
    newest, _ = world.agent.wait_tickets(2)
    other.close()
    widget(page).locator(".log").get_by_text("And my other order?").wait_for(
        state="attached", timeout=WAIT_MS)
    assert badge.is_hidden()
    world.agent.reply(newest["id"], "One more thing")
    widget(page).locator(".log").get_by_text("One more thing").wait_for(
        state="attached", timeout=WAIT_MS)
    expect(badge).to_have_text("1")
    assert widget(page).locator("button.bubble").get_attribute(
        "aria-label") == "Open chat (1 unread)"


# ------------------------------------------------------------------ one store per identity


def pending_then_leave(page: Page, url: str, text: str) -> None:
    """On `url`, `text` is written while the bridge cannot be reached for sends; then the
    person leaves the page (it stays queued in the browser)."""
    block(page, "messages")
    page.goto(url)
    open_chat(page)
    write(page, text)
    expect(widget(page).locator(".log .pending .body")).to_have_text(text)
    page.goto("about:blank")
    page.unroute_all()


def chat_as(page: Page, url: str, text: str) -> None:
    """Another person opens `url` and writes `text`; it is stored."""
    page.goto(url)
    open_chat(page)
    write(page, text)
    wait_for_text(page, text)
    expect(widget(page).locator(".log .pending")).to_have_count(0, timeout=WAIT_MS)


def addresses(world: World) -> dict[str, list[str]]:
    """The stored visitor messages by contact address (anonymous visitors: 'anon')."""
    found: dict[str, list[str]] = {}
    for ticket in world.agent.tickets():
        address = ticket["contact"]["address"]
        key = "anon" if address.startswith("v_") else address
        found.setdefault(key, []).extend(bodies(world, address))
    return found


def test_a_users_pending_message_is_neither_shown_to_nor_sent_as_the_next_person(
        world: World, page: Page) -> None:
    pending_then_leave(page, world.url("/ada"), "for Ada's eyes only")
    chat_as(page, world.url("/"), "hello, anonymous")
    assert "for Ada's eyes only" not in thread_texts(page)
    chat_as(page, world.url("/bob"), "hello, Bob here")
    assert thread_texts(page) == ["hello, Bob here"]
    assert addresses(world) == {"anon": ["hello, anonymous"], "ext:bob-2": ["hello, Bob here"]}
    # Ada comes back: her message was kept for her, and goes out as hers.
    page.goto(world.url("/ada"))
    open_chat(page)
    wait_for_text(page, "for Ada's eyes only")
    until(lambda: "ext:ada-1" in addresses(world), "Ada's message")
    assert addresses(world)["ext:ada-1"] == ["for Ada's eyes only"]
    assert thread_texts(page) == ["for Ada's eyes only"]


def test_an_anonymous_pending_message_is_not_sent_as_the_user_who_logs_in(
        world: World, page: Page) -> None:
    pending_then_leave(page, world.url("/"), "anonymous and private")
    chat_as(page, world.url("/ada"), "Ada, logged in")
    assert thread_texts(page) == ["Ada, logged in"]
    assert addresses(world) == {"ext:ada-1": ["Ada, logged in"]}
    # Logged out again: the anonymous visitor's message goes out as theirs.
    page.goto(world.url("/"))
    open_chat(page)
    until(lambda: "anon" in addresses(world), "the anonymous message")
    assert addresses(world) == {"ext:ada-1": ["Ada, logged in"],
                                "anon": ["anonymous and private"]}


def test_the_store_shared_by_every_identity_before_keeps_its_token_not_its_outbox(
        world: World, page: Page) -> None:
    """A browser that used the widget before the stores were per identity: the anonymous
    visitor's token carries on (the same conversation); a pending message there may be
    anyone's, so it is neither shown nor sent."""
    chat_as(page, world.url("/"), "before the update")
    base = world.bridge.url
    page.evaluate("""([base]) => {
        const own = JSON.parse(localStorage.getItem(`bridge-chat:${base}/anon`));
        localStorage.clear();
        localStorage.setItem(`bridge-chat:${base}`, JSON.stringify({token: own.token,
            outbox: [{client_id: "0123456789abcdef", body: "someone's draft"}]}));
    }""", [base])
    page.reload()
    open_chat(page)
    wait_for_text(page, "before the update")
    assert thread_texts(page) == ["before the update"]
    assert page.evaluate("Object.keys(localStorage)") == [f"bridge-chat:{base}/anon"]
    chat_as(page, world.url("/"), "after the update")
    assert addresses(world) == {"anon": ["before the update", "after the update"]}


def stored_outbox(page: Page, world: World) -> list[str]:
    return list(page.evaluate("""([key]) =>
        (JSON.parse(localStorage.getItem(key) || "{}").outbox || []).map(i => i.body)""",
                              [f"bridge-chat:{world.bridge.url}/anon"]))


def test_two_tabs_of_one_visitor_lose_and_double_no_queued_message(
        world: World, page: Page) -> None:
    chat_as(page, world.url("/"), "first")
    block(page.context, "messages")
    other = page.context.new_page()
    other.goto(world.url("/"))
    open_chat(other)
    wait_for_text(other, "first")
    write(page, "from tab one")
    expect(widget(page).locator(".log .pending")).to_have_count(1)
    write(other, "from tab two")
    expect(widget(other).locator(".log .pending")).to_have_count(1)
    assert stored_outbox(other, world) == ["from tab one", "from tab two"]
    page.goto("about:blank")  # tab one is gone before it could send
    page.context.unroute_all()
    until(lambda: not stored_outbox(other, world), "the outbox to be sent")
    assert bodies(world) == ["first", "from tab one", "from tab two"]
    wait_for_text(other, "from tab one")
    expect(widget(other).locator(".log .pending")).to_have_count(0)
    assert thread_texts(other) == ["first", "from tab one", "from tab two"]


# ------------------------------------------------------------------ a refused user JWT


def test_an_expired_user_jwt_says_so_once_and_keeps_the_message_for_that_user(
        world: World, page: Page) -> None:
    expired = site_jwt("ada-1", exp=int(time.time()) - 600)
    url = world.add_page("/ada-expired", f"data-user-jwt='{expired}'")
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    sessions: list[str] = []
    page.on("request", lambda r: sessions.append(r.url) if r.url.endswith("/session") else None)
    page.clock.install()
    page.goto(url)
    open_chat(page)
    write(page, "where is my order?")
    expect(widget(page).locator(".status")).to_have_text("Sign-in expired — reload the page")
    assert any("data-user-jwt" in w and "token_expired" in w for w in warnings), warnings
    assert len(sessions) == 1
    page.clock.run_for(5 * 60_000)  # what was retried every few seconds, for good
    assert len(sessions) == 1
    expect(widget(page).locator(".log .pending .meta")).to_have_text("Sending…")
    assert world.agent.tickets() == []
    # A page with a fresh JWT for the same user sends it, as hers.
    page.goto(world.url("/ada"))
    open_chat(page)
    wait_for_text(page, "where is my order?")
    until(lambda: "ext:ada-1" in addresses(world), "Ada's message")
    assert addresses(world) == {"ext:ada-1": ["where is my order?"]}


# ------------------------------------------------------------------ WebSocket, long polling
