"""Errors under /app/ are pages (HTML, with the pages' CSP and no framing), not the API's
JSON; the API's errors stay JSON."""

from __future__ import annotations

import pytest
from aiohttp import ClientResponse

from bridge.web.workspace import tickets
from tests.conftest import AGENT_TOKEN, Client
from tests.workspace_support import csrf_of, sign_in


def _is_page(answer: ClientResponse) -> None:
    headers = answer.headers
    assert headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


async def test_an_unknown_app_path_is_a_404_page(client: Client) -> None:
    answer = await client.get("/app/no-such-page")
    assert answer.status == 404
    _is_page(answer)
    await sign_in(client, AGENT_TOKEN)
    answer = await client.get("/app/tickets/1/nothing")
    assert answer.status == 404
    _is_page(answer)
    assert 'id="signed-in-as">alice<' in await answer.text()
    api = await client.get("/api/v1/nothing")
    assert api.status in (401, 404) and api.content_type == "application/json"


async def test_a_page_that_fails_is_a_500_page(client: Client,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(tickets, "views", broken)
    await _sign_in_quietly(client)
    answer = await client.get("/app/")
    assert answer.status == 500
    _is_page(answer)
    assert "boom" not in await answer.text()


async def _sign_in_quietly(client: Client) -> None:
    """sign_in's own check of /app/ would meet the broken page."""
    form = await client.get("/app/sign-in")
    signed = await client.post("/app/sign-in", allow_redirects=False, data={
        "csrf_token": csrf_of(await form.text()), "token": AGENT_TOKEN, "next": "/app/"})
    assert signed.status == 303
