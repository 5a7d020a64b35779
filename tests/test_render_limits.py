"""Rendering cannot starve the web process (security finding: slow templates).

One request renders for at most its budget (the rest is reported, not rendered), a macro
holds a bounded number of locale variants, rendering has its own bounded executor (503 busy
when full, 429 per user), and webhooks never wait behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.web import macros
from config.settings import Settings
from tests.conftest import make_settings
from tests.factories import inbound_form, post_signed
from tests.macro_app import ADMIN, AGENT, build_app

Client = TestClient[Any, Any]

# Never finishes on its own: each locale runs until its time limit or the budget stops it.
ENDLESS = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
           "{% endfor %}Hi")
LOCALES = ["en", "fr", "de", "es", "it", "pt"]


async def _client(aiohttp_client: Any, settings: Settings, aredis: redis.asyncio.Redis,
                  sync_redis: redis.Redis) -> Client:
    client: Client = await aiohttp_client(build_app(settings, aredis, sync_redis))
    return client


class Blocker:
    """Stands in for validate_macro: holds its render thread until released."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        with self._lock:
            self.entered += 1
        self.release.wait(10)
        return []

    async def wait_entered(self, count: int) -> None:
        for _ in range(1000):
            if self.entered >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {self.entered} renders started, expected {count}")


@pytest.fixture
def blocker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Blocker]:
    block = Blocker()
    monkeypatch.setattr(macros, "validate_macro", block)
    yield block
    block.release.set()


def draft(locales: list[str], text: str = "Hello {{ contact.first_name }}") -> dict[str, Any]:
    return {"locales": {loc: text for loc in locales}}


async def test_validate_stops_at_the_request_budget_and_lists_what_was_not_checked(
    aiohttp_client: Any, redis_url: str, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
) -> None:
    settings = make_settings(redis_url, render_request_budget_s=1.5)
    client = await _client(aiohttp_client, settings, aredis, sync_redis)
    response = await client.post("/api/v1/macros/slow/validate", json=draft(LOCALES, ENDLESS),
                                 headers=ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "render_budget_exceeded"
    # The first locale used its whole 1 s limit; the budget cut the second and the rest
    # were never started.
    kinds = {p["template"]: p["kind"] for p in error["problems"]}
    assert kinds["locale:en"] == "timeout"
    assert error["unchecked"] == [f"locale:{loc}" for loc in LOCALES[1:]]
    assert all(kinds[key] == "budget" for key in error["unchecked"])
    assert "not checked: locale:fr" in error["message"]


async def test_save_of_a_macro_over_the_budget_is_refused_and_stores_nothing(
    aiohttp_client: Any, redis_url: str, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
) -> None:
    settings = make_settings(redis_url, render_request_budget_s=1.5)
    client = await _client(aiohttp_client, settings, aredis, sync_redis)
    response = await client.put("/api/v1/macros/greeting", json=draft(LOCALES, ENDLESS),
                                headers=ADMIN)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "render_budget_exceeded"
    current = await (await client.get("/api/v1/macros/greeting", headers=AGENT)).json()
    assert current["version"] == 0


async def test_preview_of_slow_variables_stops_at_the_request_budget(
    aiohttp_client: Any, redis_url: str, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
) -> None:
    settings = make_settings(redis_url, render_request_budget_s=1.5)
    client = await _client(aiohttp_client, settings, aredis, sync_redis)
    body = {"locales": {"en": ENDLESS},
            "actions": {"content_sid": "HX" + "0" * 32,
                        "content_variables": {str(n): ENDLESS for n in range(1, 6)}}}
    response = await client.post("/api/v1/macros/slow/preview", json=body, headers=ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "render_budget_exceeded"
    assert len(error["unchecked"]) >= 4
    assert "content_variables.5" in error["unchecked"]


async def test_too_many_variants_are_refused_at_save_and_validate(
    aiohttp_client: Any, redis_url: str, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
) -> None:
    settings = make_settings(redis_url, max_variants_per_macro=3)
    client = await _client(aiohttp_client, settings, aredis, sync_redis)
    body = draft(["en", "fr", "de", "es"])
    saved = await client.put("/api/v1/macros/greeting", json=body, headers=ADMIN)
    assert saved.status == 422
    error = (await saved.json())["error"]
    assert error["code"] == "too_many_variants"
    assert "4 locale variants" in error["message"] and "at most 3" in error["message"]
    current = await (await client.get("/api/v1/macros/greeting", headers=AGENT)).json()
    assert current["version"] == 0
    checked = await client.post("/api/v1/macros/greeting/validate", json=body, headers=ADMIN)
    assert checked.status == 422
    assert (await checked.json())["error"]["code"] == "too_many_variants"
    previewed = await client.post("/api/v1/macros/greeting/preview", json=body, headers=ADMIN)
    assert previewed.status == 422
    ok = await client.put("/api/v1/macros/greeting", json=draft(["en", "fr", "de"]),
                          headers=ADMIN)
    assert ok.status == 200


async def test_a_full_render_executor_answers_503_busy_with_retry_after(
    aiohttp_client: Any, redis_url: str, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
    blocker: Blocker,
) -> None:
    settings = make_settings(redis_url, render_workers=1, render_queue=0)
    client = await _client(aiohttp_client, settings, aredis, sync_redis)
    # An agent validates the macro as saved (drafts are the admins'); it renders the same.
    held = asyncio.create_task(client.post("/api/v1/macros/greeting/validate", json={},
                                           headers=AGENT))
    await blocker.wait_entered(1)
    for path in ("/api/v1/macros/greeting/validate", "/api/v1/macros/greeting/preview"):
        refused = await client.post(path, json=draft(["en"]), headers=ADMIN)
        assert refused.status == 503
        assert refused.headers["Retry-After"].isdigit()
        assert (await refused.json())["error"]["code"] == "busy"
    blocker.release.set()
    assert (await held).status == 200
    again = await client.post("/api/v1/macros/greeting/validate", json=draft(["en"]),
                              headers=ADMIN)
    assert again.status == 200


async def test_one_user_may_run_only_so_many_renders_at_once(
    aiohttp_client: Any, redis_url: str, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
    blocker: Blocker,
) -> None:
    settings = make_settings(redis_url, render_workers=2, render_queue=2, render_per_user=1)
    client = await _client(aiohttp_client, settings, aredis, sync_redis)
    path = "/api/v1/macros/greeting/validate"
    # The agent validates the macro as saved (drafts are the admins'); it renders the same.
    held = asyncio.create_task(client.post(path, json={}, headers=AGENT))
    await blocker.wait_entered(1)
    refused = await client.post(path, json={}, headers=AGENT)
    assert refused.status == 429
    assert refused.headers["Retry-After"].isdigit()
    assert (await refused.json())["error"]["code"] == "too_many_renders"
    # Another user is not held back by the first one's renders.
    other = asyncio.create_task(client.post(path, json=draft(["en"]), headers=ADMIN))
    await blocker.wait_entered(2)
    blocker.release.set()
    assert (await held).status == 200 and (await other).status == 200
    assert (await client.post(path, json={}, headers=AGENT)).status == 200


async def test_webhooks_are_answered_while_every_render_thread_is_blocked(
    aiohttp_client: Any, redis_url: str, sync_redis: redis.Redis, blocker: Blocker,
) -> None:
    # A small default executor, as on a small machine: the renders must not use it.
    loop = asyncio.get_running_loop()
    default = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    loop.set_default_executor(default)
    settings = make_settings(redis_url, render_workers=2, render_queue=0, render_per_user=4)
    client: Client = await aiohttp_client(create_app(settings))
    path = "/api/v1/macros/greeting/validate"
    renders = [asyncio.create_task(client.post(path, json={}, headers=AGENT))
               for _ in range(4)]
    await blocker.wait_entered(2)
    # A new contact: routing opens a ticket (and records its change for the relay).
    form = inbound_form("Hello, new here", sender="whatsapp:+33699990001")
    webhook = await asyncio.wait_for(post_signed(client, "/webhooks/twilio", form), 5)
    assert webhook.status == 200
    # ...and the API, which also uses the loop's executor for nothing the renders hold,
    # lists it while every render thread is still blocked.
    listed = await asyncio.wait_for(client.get("/api/v1/tickets", headers=AGENT), 5)
    assert [t["contact"]["address"] for t in (await listed.json())["tickets"]] == [
        "whatsapp:+33699990001"]
    blocker.release.set()
    statuses = sorted([(await r).status for r in renders])
    assert statuses == [200, 200, 503, 503]
