"""The widget's HTTP API through the real app: sessions, origins, sending through the
routing transaction, deduplication, history, read receipts, flood control, bad input."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import jwt
import pytest
import redis

from bridge.app import create_app
from bridge.channels import widget as channel
from bridge.core.messages import Channel
from bridge.store.embedded import free_port
from bridge.web.widget_assets import SCRIPT_PATH
from config.settings import Secret, Settings
from tests.conftest import AGENT_TOKEN, Client, contact_id, make_settings

ORIGIN = "https://shop.example.com"
SITE_KEY = "site-signing-key-0123456789abcdef0123"
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, widget_origins=(ORIGIN,),
                         widget_jwt_keys={"k1": Secret(SITE_KEY)},
                         widget_visitor_messages_per_min=5, widget_ip_requests_per_min=40)


def site_jwt(external_id: str = "user-42", **claims: Any) -> str:
    body = {"external_id": external_id, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, SITE_KEY, algorithm="HS256", headers={"kid": "k1"})


async def call(client: Client, path: str, body: Any = None, *, token: str = "",
               origin: str | None = ORIGIN, **headers: str) -> Any:
    if origin is not None:
        headers["Origin"] = origin
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return await client.post(f"/widget/v1/{path}", json=body, headers=headers)


async def new_visitor(client: Client, **body: Any) -> str:
    response = await call(client, "session", body or None)
    assert response.status == 200, await response.text()
    return str((await response.json())["token"])


async def send(client: Client, token: str, body: str = "Bonjour", client_id: str | None = None,
               **extra: str) -> Any:
    return await call(client, "messages", {"client_id": client_id or f"cid{time.time_ns()}",
                                           "body": body, **extra}, token=token)


async def tickets(client: Client) -> list[dict[str, Any]]:
    listed = await (await client.get("/api/v1/tickets?channel=widget", headers=AGENT)).json()
    return list(listed["tickets"])


async def test_a_visitor_message_opens_a_widget_ticket(client: Client) -> None:
    token = await new_visitor(client)
    response = await send(client, token, "Where is my order?")
    assert response.status == 201
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    (ticket,) = await tickets(client)
    assert ticket["channel"] == "widget" and ticket["status"] == "new"
    events = await (await client.get(f"/api/v1/tickets/{ticket['id']}/events",
                                     headers=AGENT)).json()
    assert [e["body"] for e in events["events"]] == ["Where is my order?"]


async def test_a_retried_send_is_stored_once(client: Client) -> None:
    token = await new_visitor(client)
    first = await send(client, token, "once", client_id="same-id-123")
    again = await send(client, token, "once", client_id="same-id-123")
    assert first.status == 201 and again.status == 200
    assert (await again.json())["duplicate"] is True
    (ticket,) = await tickets(client)
    assert ticket["message_count"] == 1


async def test_the_routing_rules_apply_to_widget_messages(client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "first")
    (ticket,) = await tickets(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    assert (await client.post(f"{url}/replies", json={"body": "Hello!"},
                              headers=AGENT)).status == 202
    assert (await client.post(f"{url}/session/end", headers=AGENT)).status == 200
    assert (await (await send(client, token, "second")).json())["action"] == "new_ticket"
    newest, _ = await tickets(client)
    await client.patch(f"/api/v1/tickets/{newest['id']}", json={"status": "closed"},
                       headers=AGENT)
    assert (await (await send(client, token, "third")).json())["action"] == "follow_up"
    history = await (await call(client, "history", {}, token=token)).json()
    kinds = [(e["type"], e.get("body")) for e in reversed(history["events"])]
    assert kinds == [("visitor", "first"), ("agent", "Hello!"), ("ended", None),
                     ("visitor", "second"), ("visitor", "third")]


async def test_history_pages_back_without_gaps_or_repeats(client: Client) -> None:
    token = await new_visitor(client)
    for i in range(5):
        await send(client, token, f"m{i}")
    seen: list[str] = []
    before: str | None = None
    while True:
        page = await (await call(client, "history", {"before": before, "limit": 2},
                                 token=token)).json()
        seen += [e["body"] for e in page["events"]]
        before = page["before"]
        if before is None:
            break
    assert seen == ["m4", "m3", "m2", "m1", "m0"]


async def test_a_reload_continues_the_conversation(client: Client) -> None:
    token = await new_visitor(client)
    again = await call(client, "session", token=token)
    assert again.status == 200
    continued = (await again.json())["token"]
    await send(client, token, "one")
    await send(client, continued, "two")
    (ticket,) = await tickets(client)
    assert ticket["message_count"] == 2


async def test_a_token_from_before_a_secret_rotation_still_works(
        client: Client, redis_url: str, aiohttp_client: Any) -> None:
    from bridge.app import create_app

    old = await new_visitor(client)
    rotated = make_settings(redis_url, widget_origins=(ORIGIN,), secret=Secret("new-secret"),
                            secret_previous=Secret("widget-secret-for-tests"))
    other = await aiohttp_client(create_app(rotated))
    assert (await send(other, old, "after rotation")).status == 201
    renewed = await (await call(other, "session", token=old)).json()
    header = jwt.get_unverified_header(renewed["token"])
    assert header["kid"] == channel.key_id("new-secret")


async def test_one_external_id_is_one_contact_on_every_device(client: Client) -> None:
    phone = await new_visitor(client, user_jwt=site_jwt(name="Ada"))
    laptop = await new_visitor(client, user_jwt=site_jwt())
    await send(client, phone, "from my phone")
    await send(client, laptop, "from my laptop")
    (ticket,) = await tickets(client)
    assert ticket["message_count"] == 2
    assert ticket["contact"]["id"] == contact_id(Channel.WIDGET, "ext:user-42")
    assert ticket["contact"]["name"] == "Ada"


async def test_a_signed_in_users_session_is_renewed_only_with_the_sites_jwt(
        client: Client) -> None:
    """Renewed with itself (30 days each time), a user's access outlived the site's JWT,
    its logout and the user's removal."""
    token = await new_visitor(client, user_jwt=site_jwt())
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 12 * 3600  # BRIDGE_WIDGET_USER_TOKEN_TTL_S
    renewal = await call(client, "session", token=token)
    assert renewal.status == 401
    assert (await renewal.json())["error"]["code"] == "user_jwt_required"
    assert (await send(client, token, "still within its 12 hours")).status == 201
    anonymous = await new_visitor(client)  # an anonymous visitor's token renews itself
    assert (await call(client, "session", token=anonymous)).status == 200


@pytest.mark.parametrize("bad", [
    lambda: jwt.encode({"external_id": "u", "exp": int(time.time()) + 60}, SITE_KEY,
                       headers={"kid": "k2"}),
    lambda: jwt.encode({"external_id": "u", "exp": int(time.time()) - 600}, SITE_KEY,
                       headers={"kid": "k1"}),
    lambda: jwt.encode({"external_id": "u", "exp": int(time.time()) + 60}, "f" * 40,
                       headers={"kid": "k1"}),
    lambda: "garbage",
])
async def test_forged_expired_or_unknown_key_jwts_are_401(
        client: Client, sync_redis: redis.Redis, bad: Any) -> None:
    response = await call(client, "session", {"user_jwt": bad()})
    assert response.status == 401
    assert (await response.json())["error"]["code"] in (
        "unknown_key", "token_expired", "invalid_token")
    assert not sync_redis.keys("{p:*")


async def test_calls_without_a_valid_visitor_token_are_401_and_write_nothing(
        client: Client, sync_redis: redis.Redis) -> None:
    token = await new_visitor(client)
    head, body, _ = token.split(".")
    for bad in ("", "nonsense", f"{head}.{body}.AAAA"):
        response = await send(client, bad, "x")
        assert response.status == 401
    assert not sync_redis.keys("{p:*")


@pytest.mark.parametrize("origin", [None, "https://evil.example.com", "null",
                                    "https://shop.example.com.evil.com"])
async def test_other_origins_are_403(client: Client, sync_redis: redis.Redis,
                                     origin: str | None) -> None:
    token = await new_visitor(client)
    for path, body in (("session", {}), ("messages", {"client_id": "abcdefgh", "body": "x"}),
                       ("history", {}), ("poll", {"wait_s": 0})):
        response = await call(client, path, body, token=token, origin=origin)
        assert response.status == 403, path
        assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await client.options("/widget/v1/messages",
                                     headers={"Origin": origin or "", "Access-Control-"
                                              "Request-Method": "POST"})
    assert preflight.status == 403
    assert not sync_redis.keys("{p:*")


@pytest.mark.parametrize("development", [False, True])
async def test_a_host_header_matching_the_origin_is_not_an_allowed_origin(
        aiohttp_client: Any, redis_url: str, sync_redis: redis.Redis, development: bool
) -> None:
    # A DNS rebinding page (or any script) chooses its Host header: Origin == Host is no
    # proof that the bridge served the page.
    app = create_app(make_settings(redis_url, widget_origins=(ORIGIN,),
                                   development=development))
    client = await aiohttp_client(app)
    response = await call(client, "session", {}, origin="http://evil.example",
                          Host="evil.example")
    assert response.status == 403
    assert not sync_redis.keys("{p:*")


async def test_in_development_a_loopback_name_of_the_same_host_is_allowed(
        aiohttp_client: Any, redis_url: str) -> None:
    # The demo page opened as http://localhost:PORT while PUBLIC_BASE_URL says 127.0.0.1.
    port = free_port()
    app = create_app(make_settings(redis_url, development=True, port=port))
    client = await aiohttp_client(app, server_kwargs={"port": port})
    for name in ("localhost", "127.0.0.1"):
        response = await call(client, "session", {}, origin=f"http://{name}:{port}",
                              Host=f"{name}:{port}")
        assert response.status == 200, name
    # Another loopback port (another local app) passed when its Host header said the same.
    other = await call(client, "session", {}, origin="http://localhost:9999",
                       Host="localhost:9999")
    assert other.status == 403
    production = await aiohttp_client(create_app(make_settings(redis_url)))
    response = await call(production, "session", {},
                          origin=f"http://localhost:{production.server.port}",
                          Host=f"localhost:{production.server.port}")
    assert response.status == 403


async def test_an_unknown_widget_call_is_404(client: Client) -> None:
    response = await call(client, "nope", {})
    assert response.status == 404
    preflight = await client.options("/widget/v1/nope", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status in (404, 405)


async def test_an_allowed_origin_passes_the_preflight(client: Client) -> None:
    response = await client.options("/widget/v1/messages", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("body", [
    {"client_id": "abcdefgh"},
    {"client_id": "abcdefgh", "body": ""},
    {"client_id": "abcdefgh", "body": "x" * 5000},
    {"client_id": "x", "body": "hi"},
    {"client_id": "abcdefgh", "body": "hi", "extra": 1},
    {"client_id": "abcdefgh", "body": "hi", "button": "csat:1:0"},
    ["not", "an", "object"],
])
async def test_bad_messages_are_4xx_and_write_nothing(
        client: Client, sync_redis: redis.Redis, body: Any) -> None:
    token = await new_visitor(client)
    response = await call(client, "messages", body, token=token)
    assert 400 <= response.status < 500
    assert "error" in await response.json()
    assert not sync_redis.keys("{p:*")


async def test_a_visitor_past_its_message_budget_gets_429_others_do_not(
        client: Client) -> None:
    flooder, calm = await new_visitor(client), await new_visitor(client)
    statuses = [(await send(client, flooder, f"m{i}")).status for i in range(7)]
    assert statuses[:5] == [201] * 5 and statuses[5:] == [429, 429]
    refused = await send(client, flooder, "again")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert (await send(client, calm, "hello")).status == 201


async def test_a_retry_of_a_stored_message_is_a_duplicate_even_past_the_budget(
        client: Client) -> None:
    """The outbox resends after a network error: what is stored is answered as such."""
    token = await new_visitor(client)
    assert (await send(client, token, "first", client_id="kept-0001")).status == 201
    for i in range(4):
        assert (await send(client, token, f"m{i}")).status == 201
    assert (await send(client, token, "over")).status == 429  # the budget (5) is spent
    again = await send(client, token, "first", client_id="kept-0001")
    assert again.status == 200 and (await again.json())["duplicate"] is True
    assert (await send(client, token, "new", client_id="never-0001")).status == 429


async def test_resent_duplicates_use_none_of_the_visitors_allowance(client: Client) -> None:
    """Two tabs sending the same queued message, or a resend after a lost answer: each is
    a duplicate, and the visitor's 5 messages a minute stay theirs."""
    token = await new_visitor(client)
    assert (await send(client, token, "first", client_id="kept-0001")).status == 201
    for _ in range(6):
        again = await send(client, token, "first", client_id="kept-0001")
        assert again.status == 200 and (await again.json())["duplicate"] is True
    assert [(await send(client, token, f"m{i}")).status for i in range(4)] == [201] * 4


@pytest.mark.parametrize(("body", "content_type", "status"), [
    ([], "application/json", 400), ("notjson", "application/json", 400),
    ({"zzz": 1}, "application/json", 422), ("{}", "text/plain", 415),
])
async def test_typing_checks_its_body_like_every_call(
        client: Client, body: Any, content_type: str, status: int) -> None:
    token = await new_visitor(client)
    raw = body if isinstance(body, str) else json.dumps(body)
    response = await client.post("/widget/v1/typing", data=raw, headers={
        "Origin": ORIGIN, "Authorization": f"Bearer {token}", "Content-Type": content_type})
    assert response.status == status, await response.text()
    assert (await call(client, "typing", {}, token=token)).status == 204


async def test_an_ip_past_its_budget_gets_429(client: Client) -> None:
    statuses = [(await call(client, "session", {})).status for _ in range(42)]
    assert statuses.count(200) == 40 and statuses[-1] == 429


async def test_the_script_is_small_and_cacheable(client: Client) -> None:
    response = await client.get(SCRIPT_PATH, headers={"Accept-Encoding": "gzip"},
                                auto_decompress=False)
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    raw = await response.read()
    assert len(raw) <= 12 * 1024
    text = gzip.decompress(raw).decode()
    assert "__WIDGET_CSS__" not in text and ".bubble" in text
    etag = response.headers["ETag"]
    assert (await client.get(SCRIPT_PATH, headers={"If-None-Match": etag})).status == 304


async def test_the_demo_page_is_served_with_a_strict_policy(client: Client) -> None:
    response = await client.get("/widget/demo")
    assert response.status == 200
    policy = response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy and "script-src 'self'" in policy
    assert SCRIPT_PATH in await response.text()
