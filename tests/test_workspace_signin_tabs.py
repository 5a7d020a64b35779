"""The sign-in form opened in two tabs: both sign in, and a form whose CSRF cookie is gone
answers the sign-in page again with a message (never the API's JSON)."""

from __future__ import annotations

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.workspace_support import csrf_of


async def test_two_open_sign_in_forms_both_work(client: Client) -> None:
    first = csrf_of(await (await client.get("/app/sign-in")).text())
    second = csrf_of(await (await client.get("/app/sign-in")).text())
    for token, csrf in ((AGENT_TOKEN, first), (ADMIN_TOKEN, second)):
        signed = await client.post("/app/sign-in", allow_redirects=False, data={
            "csrf_token": csrf, "token": token, "next": "/app/macros"})
        assert signed.status == 303, await signed.text()
        assert signed.headers["Location"] == "/app/macros"


async def test_a_stale_sign_in_form_gets_the_page_again(client: Client) -> None:
    await client.get("/app/sign-in")
    client.session.cookie_jar.clear()  # the cookie expired, or another browser
    answer = await client.post("/app/sign-in", data={
        "csrf_token": "x" * 32, "token": AGENT_TOKEN, "next": "/app/reports"})
    assert answer.status == 403
    assert answer.content_type == "text/html"
    html = await answer.text()
    assert "The sign-in form had expired: sign in again" in html
    assert 'name="next" value="/app/reports"' in html
    again = await client.post("/app/sign-in", allow_redirects=False, data={
        "csrf_token": csrf_of(html), "token": AGENT_TOKEN, "next": "/app/reports"})
    assert again.status == 303 and again.headers["Location"] == "/app/reports"
