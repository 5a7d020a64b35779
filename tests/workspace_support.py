"""Helpers for the workspace's page tests: sign in through the form, read CSRF tokens."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: TestClient[Any, Any], token: str) -> str:
    """Sign in with a token through the form; the session's CSRF token."""
    form_page = await client.get("/app/sign-in")
    assert form_page.status == 200
    signed = await client.post("/app/sign-in", data={
        "csrf_token": csrf_of(await form_page.text()), "token": token, "next": "/app/"},
        allow_redirects=False)
    assert signed.status == 303, await signed.text()
    views = await client.get("/app/")
    assert views.status == 200
    return csrf_of(await views.text())
