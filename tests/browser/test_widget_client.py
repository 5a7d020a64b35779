"""The widget's browser client where QA found it wrong, one test per defect: Chromium
against a real bridge, the widget on a site of another origin under a strict
Content-Security-Policy, as in test_widget.py. Waits are on conditions, never on
durations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import redis
from playwright.sync_api import (
    BrowserContext,
    Page,
    Route,
    ViewportSize,
    WebSocket,
    WebSocketRoute,
    expect,
)

from config.settings import Secret, Settings
from tests.browser.conftest import assert_accessible
from tests.browser.widget_support import (
    SITE_KEY,
    WAIT_MS,
    Agent,
    Served,
    bridge,
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
from tests.conftest import make_settings

pytestmark = pytest.mark.browser

PHONE: ViewportSize = {"width": 375, "height": 667}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class World:
    bridge: Served
    site: Served
    pages: dict[str, str]  # the site's pages: a test may add some
    agent: Agent
    redis_url: str

    def url(self, name: str = "/") -> str:
        return self.site.url + name

    def add_page(self, name: str, attributes: str) -> str:
        self.pages[name] = host_page(self.bridge.url, attributes=attributes)
        return self.url(name)


@pytest.fixture
def world(redis_url: str, sync_redis: redis.Redis) -> Iterator[World]:
    bridge_port, site_port = free_port(), free_port()
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    settings: Settings = make_settings(redis_url, public_base_url=bridge_url,
                                       widget_origins=(f"http://127.0.0.1:{site_port}",),
                                       widget_jwt_keys={"shop": Secret(SITE_KEY)})
    served = bridge(settings, bridge_port)
    pages = {"/": host_page(bridge_url),
             "/ada": host_page(bridge_url, attributes=f"data-user-jwt='{site_jwt('ada-1')}'"),
             "/bob": host_page(bridge_url, attributes=f"data-user-jwt='{site_jwt('bob-2')}'")}
    shop = site(site_port, pages, strict_csp(bridge_url))
    world = World(served, shop, pages, Agent(bridge_url), redis_url)
    try:
        yield world
    finally:
        shop.stop()
        world.bridge.stop()


def until(check: Callable[[], bool], what: str, page: Page | None = None) -> None:
    """Wait for `check()`; with `page`, the page's events (requests, frames) are taken in
    meanwhile (Playwright delivers them only while one of its calls runs)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if page is None:
            time.sleep(0.05)
        else:
            page.wait_for_timeout(50)


def event_key(key: str) -> tuple[int, ...]:
    match = re.fullmatch(r"(\d+)-(\d+)_(\d+)", key)
    assert match, key
    return tuple(int(part) for part in match.groups())


def keys_shown(page: Page) -> list[str]:
    return list(widget(page).locator(".log > [data-key]").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('data-key'))"))


def bodies(world: World, address: str | None = None) -> list[str]:
    """Every message body the bridge stored from visitors (of one contact address), oldest
    first."""
    found = []
    for ticket in world.agent.tickets():
        if address is None or ticket["contact"]["address"] == address:
            found += [e["body"] for e in reversed(world.agent.events(ticket["id"]))
                      if e["type"] == "customer_message"]
    return found


def block(target: Page | BrowserContext, path: str) -> None:
    """The bridge's answers to one call fail as a network error would."""
    def refuse(route: Route) -> None:
        route.abort()

    target.route(f"**/widget/v1/{path}", refuse)


# ------------------------------------------------------------------ order and unread count


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


@dataclass
class Sockets:
    """The page's WebSocket attempts, the `ready` frames received and the frames sent."""

    attempts: int = 0
    ready: int = 0
    sent: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Sockets:
        def seen(ws: WebSocket) -> None:
            self.attempts += 1
            ws.on("framereceived",
                  lambda p: setattr(self, "ready", self.ready + ('"ready"' in str(p))))
            ws.on("framesent", lambda p: self.sent.append(str(p)))

        page.on("websocket", seen)
        return self


def clock_until(page: Page, check: Callable[[], bool], what: str, step_ms: int) -> None:
    """Move the page's clock on by `step_ms` (the widget's pending retries run) until
    `check()`: what the widget does seconds later, without waiting for it."""
    def moved() -> bool:
        page.clock.run_for(step_ms)
        return check()

    until(moved, what)


def test_after_the_bridge_was_down_the_widget_is_back_on_the_websocket(
        world: World, page: Page) -> None:
    """A bridge that cannot be reached refuses the socket and the HTTP calls alike: that
    is not a proxy refusing upgrades, and typing indicators keep working afterwards."""
    sockets = Sockets().watch(page)
    page.clock.install()
    page.goto(world.url())
    open_chat(page)
    write(page, "hello")
    (ticket,) = world.agent.wait_tickets(1)
    until(lambda: sockets.ready == 1, "the socket", page)
    world.bridge.stop()
    # Three attempts refused while it is down (two made the widget poll for good).
    clock_until(page, lambda: sockets.attempts >= 4, "attempts while down", 30_000)
    world.bridge.start()
    clock_until(page, lambda: sockets.ready == 2, "the socket again", 30_000)
    notice = widget(page).locator(".typing")
    world.agent.typing(ticket["id"])
    expect(notice).to_have_text("An agent is typing…")
    page.get_by_label("Message").fill("still there?")
    until(lambda: '{"type":"typing"}' in sockets.sent[-1], "the visitor's typing signal", page)


def test_long_polling_tries_the_websocket_again_and_keeps_it_once_it_opens(
        world: World, page: Page) -> None:
    """Behind a proxy that refused the upgrade, then lets it through: the widget tries
    the socket now and then (every 30 s or more) and goes back to it."""
    passing = False
    ready: list[str] = []
    polls: list[dict[str, object]] = []

    def proxy(ws: WebSocketRoute) -> None:
        if not passing:
            ws.close()
            return
        server = ws.connect_to_server()
        ws.on_message(server.send)

        def to_page(message: str | bytes) -> None:
            ready.extend([str(message)] if '"ready"' in str(message) else [])
            ws.send(message)

        server.on_message(to_page)

    page.route_web_socket("**/widget/v1/ws", proxy)
    page.on("request", lambda r: polls.append(r.post_data_json or {})
            if r.url.endswith("/widget/v1/poll") else None)
    page.clock.install()
    page.goto(world.url())
    open_chat(page)
    write(page, "behind a strict proxy")
    (ticket,) = world.agent.wait_tickets(1)
    until(lambda: any(p.get("wait_s") == 25 for p in polls), "long polling", page)
    passing = True
    clock_until(page, lambda: bool(ready), "the socket through the proxy", 20_000)
    world.agent.typing(ticket["id"])
    expect(widget(page).locator(".typing")).to_have_text("An agent is typing…")
    world.agent.reply(ticket["id"], "on the socket")
    wait_for_text(page, "on the socket")


# ------------------------------------------------------------------ a phone; keyboard focus


def focused(page: Page) -> str:
    """The focused element inside the widget: its class, or "" if the focus is elsewhere."""
    return str(page.evaluate("""() => {
        const root = document.querySelector("[data-bridge-chat]").shadowRoot;
        return document.activeElement === root.host && root.activeElement
            ? root.activeElement.className : "";
    }"""))


def drawn_at_centre(page: Page, selector: str) -> str:
    """The class of the widget's element a tap at the centre of `selector` lands on."""
    return str(page.evaluate("""([selector]) => {
        const root = document.querySelector("[data-bridge-chat]").shadowRoot;
        const box = root.querySelector(selector).getBoundingClientRect();
        const hit = root.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
        return hit ? hit.closest("button, textarea, section").className : "";
    }""", [selector]))


def test_on_a_phone_send_can_be_tapped_and_the_chat_closed(world: World, page: Page) -> None:
    page.set_viewport_size(PHONE)
    page.goto(world.url())
    open_chat(page)
    assert drawn_at_centre(page, ".send") == "send"
    assert drawn_at_centre(page, ".close") == "close"
    assert_accessible(page)  # open, full screen
    page.get_by_label("Message").fill("typed on a phone")
    widget(page).locator("button.send").click()
    wait_for_text(page, "typed on a phone")
    assert widget(page).locator("[role=dialog]").is_visible()
    widget(page).locator("button.close").click()
    bubble = widget(page).locator("button.bubble")
    expect(bubble).to_be_visible()
    assert focused(page) == "bubble"
    assert world.agent.wait_tickets(1)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_tab_and_shift_tab_keep_the_focus_in_the_open_chat(
        world: World, page: Page, viewport: ViewportSize) -> None:
    page.set_viewport_size(viewport)
    page.goto(world.url())
    open_chat(page)
    assert focused(page) == "input"
    page.keyboard.press("Tab")
    assert focused(page) == "send"
    page.keyboard.press("Tab")
    assert focused(page) == "close"  # round to the dialog's first control
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "send"
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "input"
    for _ in range(6):  # all the way round, backwards
        page.keyboard.press("Shift+Tab")
        assert focused(page) in ("close", "log", "input", "send")
    page.keyboard.press("Escape")
    assert focused(page) == "bubble"


# ------------------------------------------------------------------ the demo page


def test_the_demo_page_on_a_phone_passes_axe_and_logs_nothing(
        world: World, page: Page) -> None:
    """No scrollable region the keyboard cannot reach, no request for a missing
    /favicon.ico (a console error on every load)."""
    logged: list[str] = []
    page.on("console", lambda m: logged.append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.set_viewport_size(PHONE)
    page.goto(world.bridge.url + "/widget/demo")
    widget(page).locator("button.bubble").wait_for(timeout=WAIT_MS)
    assert_accessible(page)
    open_chat(page)
    write(page, "from the demo")  # the page's requests, answered, before looking
    world.agent.wait_tickets(1)
    expect(widget(page).locator(".log .pending")).to_have_count(0, timeout=WAIT_MS)
    assert_accessible(page)
    assert logged == []
