"""The widget's browser client where QA found it wrong (2/2: back from an outage and from
long polling to the WebSocket, a phone's layout, keyboard focus, the demo page): Chromium
against a real bridge, as in test_widget_client.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import (
    Page,
    ViewportSize,
    WebSocket,
    WebSocketRoute,
    expect,
)

from tests.browser.conftest import assert_accessible
from tests.browser.widget_client.support import (
    DESKTOP,
    PHONE,
    World,
    until,
)
from tests.browser.widget_support import (
    WAIT_MS,
    host_page,
    open_chat,
    wait_for_text,
    widget,
    write,
)

pytestmark = pytest.mark.browser


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


def test_a_page_whose_policy_refuses_the_websocket_falls_back_to_polling(
        world: World, page: Page) -> None:
    """A site whose CSP connect-src names the bridge's HTTP calls but not its ws: URL: the
    refused socket fires "error" and never "close", and the widget stopped there (its
    message stuck on "Sending…", replies never shown)."""
    # A second policy in the page itself: both apply, so the socket is refused.
    narrower = (f'<meta http-equiv="Content-Security-Policy" '
                f'content="connect-src {world.bridge.url}">')
    html = host_page(world.bridge.url)
    world.pages["/no-sockets"] = html.replace("<head>", "<head>" + narrower, 1)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text
            else None)
    page.goto(world.url("/no-sockets"))
    open_chat(page)
    write(page, "behind a strict policy")
    (ticket,) = world.agent.wait_tickets(1)
    world.agent.reply(ticket["id"], "through long polling")
    wait_for_text(page, "through long polling")
    assert refused, "the page's policy did not refuse the socket"
    expect(widget(page).locator(".failed")).to_have_count(0)


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
