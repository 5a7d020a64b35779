"""What the widget's browser tests share: bridges on fixed ports that can be stopped and
started again (a restarted web process), a site's page on another origin served with a
strict Content-Security-Policy, and the agent's side through the HTTP API."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import redis.asyncio
from aiohttp import web
from playwright.sync_api import Frame, Locator, Page

from bridge.app import create_app
from bridge.core.rules import load_config
from bridge.jobs import JobQueues
from bridge.sending import send_csat
from bridge.store.macros import MacroStore, load_shipped
from bridge.store.tickets import TicketStore
from config.settings import DEFAULT_CONFIG_DIR, Secret, Settings
from tests.conftest import AGENT_TOKEN, CONTACT_KEY, make_settings

AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
SITE_KEY = "site-signing-key-for-browser-tests-0123"
WAIT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """An aiohttp app on 127.0.0.1:<port> in its own thread and event loop."""

    def __init__(self, make_app: Callable[[], web.Application], port: int) -> None:
        self.make_app = make_app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Served:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.make_app(), access_log=None)

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            except BaseException as exc:  # reported below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not ready.wait(20):
            raise RuntimeError(f"{self.url} did not start within 20 s")
        if failure:
            raise RuntimeError(f"{self.url} did not start") from failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop = self._thread = None


def bridge(settings: Settings, port: int) -> Served:
    return Served(lambda: create_app(settings), port).start()


def host_page(bridge_url: str, *, attributes: str = "", extra_csp: str = "") -> str:
    """A site's page: one script tag, nothing inline."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Shop</title></head><body><main><h1>Our shop</h1>"
            "<p>Questions? Use the chat.</p></main>"
            f"<script src='{bridge_url}/widget/v1/widget.js' {attributes} async></script>"
            "</body></html>")


def site(port: int, pages: dict[str, str], csp: str) -> Served:
    """The site owner's server: its pages, under its policy."""
    def make_app() -> web.Application:
        app = web.Application()

        async def page(request: web.Request) -> web.Response:
            html = pages.get(request.path)
            if html is None:
                raise web.HTTPNotFound()
            return web.Response(text=html, content_type="text/html",
                                headers={"Content-Security-Policy": csp})

        app.router.add_get("/{tail:.*}", page)
        return app

    return Served(make_app, port).start()


def strict_csp(bridge_url: str) -> str:
    """What the README tells a site owner to add: the bridge in script-src and connect-src,
    nothing else (no 'unsafe-inline' anywhere)."""
    ws_url = bridge_url.replace("http", "ws", 1)
    return (f"default-src 'none'; script-src {bridge_url}; connect-src {bridge_url} {ws_url}; "
            "base-uri 'none'; form-action 'none'")


def site_jwt(external_id: str, **claims: Any) -> str:
    body = {"external_id": external_id, "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, SITE_KEY, algorithm="HS256", headers={"kid": "shop"})


# ------------------------------------------------------------------ the widget in a page


def widget(page: Page | Frame) -> Locator:
    return page.locator("[data-bridge-chat]")


def open_chat(page: Page) -> None:
    bubble = widget(page).locator("button.bubble")
    bubble.wait_for(timeout=WAIT_MS)
    if bubble.get_attribute("aria-expanded") != "true":
        bubble.click()


def write(page: Page, text: str) -> None:
    field = page.get_by_label("Message")
    field.fill(text)
    field.press("Enter")


def thread_texts(page: Page | Frame) -> list[str]:
    return [t.strip() for t in widget(page).locator(".log .body, .log .notice").all_inner_texts()]


def wait_for_text(page: Page, text: str) -> None:
    widget(page).locator(".log").get_by_text(text, exact=True).first.wait_for(timeout=WAIT_MS)


# ------------------------------------------------------------------ the agent's side


class Agent:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers=AGENT, timeout=10)

    def tickets(self) -> list[dict[str, Any]]:
        return list(self.http.get("/api/v1/tickets", params={"channel": "widget"})
                    .json()["tickets"])

    def wait_tickets(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            found = self.tickets()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"expected {count} widget tickets, have {self.tickets()}")

    def events(self, ticket_id: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"/api/v1/tickets/{ticket_id}/events").json()["events"])

    def reply(self, ticket_id: str, body: str) -> dict[str, Any]:
        response = self.http.post(f"/api/v1/tickets/{ticket_id}/replies", json={"body": body})
        assert response.status_code == 202, response.text
        return dict(response.json())

    def typing(self, ticket_id: str) -> None:
        response = self.http.post(f"/api/v1/tickets/{ticket_id}/typing")
        assert response.status_code in (200, 202, 204), response.text

    def end_session(self, ticket_id: str) -> None:
        assert self.http.post(f"/api/v1/tickets/{ticket_id}/session/end").status_code == 200

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/api/v1/tickets/{ticket_id}").json())


def send_survey(redis_url: str, ticket_id: str) -> None:
    """The CSAT survey as the session-end trigger sends it (bridge.sending.send_csat)."""
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        sync = redis.Redis.from_url(redis_url)
        try:
            store = TicketStore(client, contact_key=CONTACT_KEY.encode())
            outcome = await send_csat(
                store=store, macros=MacroStore(client, load_shipped()),
                queues=JobQueues(sync), config=load_config(DEFAULT_CONFIG_DIR / "automations.toml"),
                ticket_id=ticket_id, now_ms=int(time.time() * 1000), reason="test")
            assert outcome.event_id, outcome
        finally:
            await client.aclose()
            sync.close()

    # Playwright's sync API runs an event loop in this thread: the survey runs in another.
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(30)
    if failure:
        raise failure[0]


@contextmanager
def bridge_and_site(redis_url: str, pages_for: Callable[[str], dict[str, str]]
                    ) -> Iterator[tuple[Settings, Served, Served, dict[str, str]]]:
    """A bridge (the widget's JWT key "shop" configured) and a site of another origin,
    allowed by it, serving `pages_for(bridge_url)` under a strict CSP; both stopped after.
    Yields (settings, bridge, site, pages)."""
    bridge_port, site_port = free_port(), free_port()
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    settings = make_settings(redis_url, public_base_url=bridge_url,
                             widget_origins=(f"http://127.0.0.1:{site_port}",),
                             widget_jwt_keys={"shop": Secret(SITE_KEY)})
    served = bridge(settings, bridge_port)
    pages = pages_for(bridge_url)
    shop = site(site_port, pages, strict_csp(bridge_url))
    try:
        yield settings, served, shop, pages
    finally:
        shop.stop()
        served.stop()
