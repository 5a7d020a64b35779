"""What the workspace's browser tests share: sign-in through the form, a customer's
WhatsApp message posted to the live bridge as Twilio would, the worker and the relay run in
this process, and the local outbox read back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import redis
import redis.asyncio
from playwright.sync_api import Page

from bridge.store.outbox import OUTBOX_STREAM
from config.settings import Settings
from tests.conftest import make_settings
from tests.factories import inbound_form, sign
from tests.faults.workers_support import work_in_process
from tests.relay_support import relay_all
from workers import runtime


def sign_in(page: Page, base_url: str, token: str, *, label: str = "Your agent or admin token",
            button: str = "Sign in") -> None:
    page.goto(f"{base_url}/app/")
    page.get_by_label(label).fill(token)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{base_url}/app/")


def customer_writes(base_url: str, body: str, sender: str = "whatsapp:+33612345678") -> None:
    form = inbound_form(body, sender=sender)
    answer = httpx.post(f"{base_url}/webhooks/twilio", data=form, timeout=10,
                        headers={"X-Twilio-Signature": sign("/webhooks/twilio", form)})
    assert answer.status_code == 200, answer.text


@contextmanager
def worker_runtime(settings: Settings) -> Iterator[None]:
    previous = runtime.install(runtime.Runtime(settings))
    try:
        yield
    finally:
        mine = runtime.install(previous)
        if mine is not None:
            mine.close()


def run_workers(redis_url: str) -> None:
    """Hand the change log on (trigger jobs) and run every queued job, as the relay and a
    worker would, with the browser tests' settings (workspace_settings). In a process of
    its own: Playwright's sync API holds this thread's event loop, and RQ's worker wants
    the main thread for its signals."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.browser.workspace_flow import "
         "_run_workers; _run_workers(sys.argv[1])", redis_url],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def workspace_settings(redis_url: str) -> Settings:
    """No Twilio account: replies go to the local outbox (webhooks are still verified)."""
    return make_settings(redis_url, twilio_account_sid="")


def _run_workers(redis_url: str) -> None:
    settings = workspace_settings(redis_url)
    connection = redis.Redis.from_url(redis_url)

    async def relay() -> None:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            await relay_all(client, connection)
        finally:
            await client.aclose()

    asyncio.run(relay())
    with worker_runtime(settings):
        work_in_process(connection)


def outbox(connection: redis.Redis) -> dict[str, str]:
    """What went to the local outbox: thread event id -> body."""
    return {fields.get(b"event_id", b"").decode(): fields.get(b"body", b"").decode()
            for _, fields in connection.xrevrange(OUTBOX_STREAM, "+", "-", count=50)}
