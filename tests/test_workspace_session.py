"""Workspace sign-in: cookie sessions, CSRF on every form, fixation, roles, sign-out."""

from __future__ import annotations

from http.cookies import SimpleCookie

import redis.asyncio

from bridge.store.sessions import SessionStore
from bridge.web.keys import redis_key
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.workspace_support import csrf_of, sign_in


def _session_cookie(client: Client) -> str:
    for cookie in client.session.cookie_jar:
        if cookie.key == "bridge_session":
            return cookie.value
    return ""


async def test_pages_send_anonymous_visitors_to_sign_in(client: Client) -> None:
    answer = await client.get("/app/", allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"].startswith("/app/sign-in?next=")


async def test_sign_in_sets_an_http_only_same_site_cookie_and_shows_the_agent(
        client: Client) -> None:
    form_page = await client.get("/app/sign-in")
    signed = await client.post("/app/sign-in", data={
        "csrf_token": csrf_of(await form_page.text()), "token": AGENT_TOKEN, "next": "/app/"},
        allow_redirects=False)
    assert signed.status == 303 and signed.headers["Location"] == "/app/"
    header = next(h for h in signed.headers.getall("Set-Cookie") if "bridge_session" in h)
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    page = await client.get("/app/")
    assert 'id="signed-in-as">alice<' in await page.text()


async def test_the_cookie_is_secure_behind_https(client: Client) -> None:
    form_page = await client.get("/app/sign-in")
    signed = await client.post("/app/sign-in", data={
        "csrf_token": csrf_of(await form_page.text()), "token": AGENT_TOKEN},
        headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    header = next(h for h in signed.headers.getall("Set-Cookie") if "bridge_session" in h)
    assert "Secure" in header


async def test_a_wrong_token_is_refused_and_creates_no_session(client: Client) -> None:
    form_page = await client.get("/app/sign-in")
    answer = await client.post("/app/sign-in", data={
        "csrf_token": csrf_of(await form_page.text()), "token": "not-a-token"},
        allow_redirects=False)
    assert answer.status == 401
    assert "Unknown token" in await answer.text()
    assert _session_cookie(client) == ""


async def test_sign_in_without_its_csrf_token_is_refused(client: Client) -> None:
    await client.get("/app/sign-in")
    answer = await client.post("/app/sign-in", data={"token": AGENT_TOKEN},
                               allow_redirects=False)
    assert answer.status == 403
    assert _session_cookie(client) == ""


async def test_every_form_needs_the_sessions_csrf_token(client: Client) -> None:
    csrf = await sign_in(client, AGENT_TOKEN)
    for path in ("/app/sign-out", "/app/tickets/1/note", "/app/tickets/1/reply"):
        missing = await client.post(path, data={"body": "x"}, allow_redirects=False)
        assert missing.status == 403, path
        wrong = await client.post(path, data={"body": "x", "csrf_token": csrf[::-1]},
                                  allow_redirects=False)
        assert wrong.status == 403, path
    # Still signed in: the refused sign-out did nothing.
    assert (await client.get("/app/", allow_redirects=False)).status == 200


async def test_sign_in_replaces_a_planted_session_id(client: Client) -> None:
    """Session fixation: an id the browser had before sign-in never becomes a session."""
    _plant(client, "planted-by-attacker")
    await sign_in(client, AGENT_TOKEN)
    sessions = SessionStore(_redis(client), ttl_s=60)
    assert await sessions.get("planted-by-attacker") is None
    issued = [c.value for c in client.session.cookie_jar
              if c.key == "bridge_session" and c.value != "planted-by-attacker"]
    assert len(issued) == 1 and await sessions.get(issued[0]) is not None


def _plant(client: Client, value: str) -> None:
    cookie: SimpleCookie = SimpleCookie()
    cookie["bridge_session"] = value
    cookie["bridge_session"]["path"] = "/app"
    client.session.cookie_jar.update_cookies(cookie)


def _redis(client: Client) -> redis.asyncio.Redis:
    return client.app[redis_key]


async def test_signing_in_again_rotates_the_session(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    first = _session_cookie(client)
    await sign_in(client, ADMIN_TOKEN)
    second = _session_cookie(client)
    assert first != second
    assert await SessionStore(_redis(client), ttl_s=60).get(first) is None


async def test_sign_out_ends_the_session(client: Client) -> None:
    csrf = await sign_in(client, AGENT_TOKEN)
    cookie = _session_cookie(client)
    out = await client.post("/app/sign-out", data={"csrf_token": csrf}, allow_redirects=False)
    assert out.status == 303
    assert await SessionStore(_redis(client), ttl_s=60).get(cookie) is None
    _plant(client, cookie)
    assert (await client.get("/app/", allow_redirects=False)).status == 303


async def test_the_api_keeps_its_bearer_tokens_and_ignores_the_cookie(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    assert (await client.get("/api/v1/tickets")).status == 401
    answer = await client.get("/api/v1/tickets",
                              headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert answer.status == 200


async def test_the_next_page_is_never_another_site(client: Client) -> None:
    form_page = await client.get("/app/sign-in")
    signed = await client.post("/app/sign-in", data={
        "csrf_token": csrf_of(await form_page.text()), "token": AGENT_TOKEN,
        "next": "https://evil.example/"}, allow_redirects=False)
    assert signed.headers["Location"] == "/app/"


async def test_a_next_page_with_a_line_break_is_not_a_header_split(client: Client) -> None:
    for raw in ("/app/%0d%0aSet-Cookie:%20x=1", "/app/%0aX:y", "/app/a%20b"):
        answer = await client.get(f"/app/lang/fr?next={raw}", allow_redirects=False)
        assert answer.status == 303, raw
        assert answer.headers["Location"] == "/app/" and "x" not in answer.cookies
    fine = await client.get("/app/lang/fr?next=/app/tickets/1", allow_redirects=False)
    assert fine.headers["Location"] == "/app/tickets/1"


async def test_pages_are_not_cached_nor_framed(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    page = await client.get("/app/")
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_a_rotated_token_ends_the_sessions_signed_in_with_it(client: Client) -> None:
    """Rotating a leaked token locks out whoever signed in with it, pages included."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = await client.post("/api/v1/agents", headers=admin,
                             json={"name": "mallory", "role": "agent"})
    await sign_in(client, (await made.json())["token"])
    assert (await client.get("/app/", allow_redirects=False)).status == 200
    rotated = await client.post("/api/v1/agents/mallory/token", headers=admin)
    assert rotated.status == 200
    assert (await client.get("/app/", allow_redirects=False)).status == 303  # to sign in
    await sign_in(client, (await rotated.json())["token"])  # the new token works
    assert (await client.get("/app/", allow_redirects=False)).status == 200


async def test_a_session_from_before_stamps_is_asked_to_sign_in_again(client: Client) -> None:
    import hashlib

    from bridge.store.keys import PREFIX
    await sign_in(client, AGENT_TOKEN)
    assert (await client.get("/app/", allow_redirects=False)).status == 200
    digest = hashlib.sha256(_session_cookie(client).encode()).hexdigest()
    assert await _redis(client).hdel(f"{PREFIX}:sess:{digest}", "stamp") == 1
    assert (await client.get("/app/", allow_redirects=False)).status == 303
