"""The widget's real time through the real app: the WebSocket (hello, resume from a cursor,
replies without a reload, typing) and long polling, fed by the change log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from bridge.web.keys import store_key
from config.settings import Settings
from tests.conftest import Client, make_settings
from tests.test_widget_api import AGENT, ORIGIN, call, new_visitor, send, tickets

WS_HEADERS = {"Origin": ORIGIN}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, widget_origins=(ORIGIN,))


async def hello(client: Client, token: str, after: str | None = None,
                seen: list[str] | None = None) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/widget/v1/ws", headers=WS_HEADERS)
    await ws.send_json({"type": "hello", "token": token, "after": after, "seen": seen or []})
    return ws


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout_s: float = 10
                  ) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data)
            if data["type"] == kind:
                return data


async def bodies_until(ws: aiohttp.ClientWebSocketResponse, wanted: str) -> list[str]:
    """Event bodies received until one equals `wanted`."""
    got: list[str] = []
    while wanted not in got:
        got += [e.get("body", e["type"]) for e in (await next_of(ws, "events"))["events"]]
    return got


async def reply(client: Client, body: str) -> None:
    (ticket, *_) = await tickets(client)
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                                 json={"body": body}, headers=AGENT)
    assert response.status == 202


async def test_an_agent_reply_reaches_the_socket(client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "hello?")
    ws = await hello(client, token)
    assert (await next_of(ws, "events"))["events"][0]["body"] == "hello?"
    await reply(client, "Hi, how can I help?")
    event = (await next_of(ws, "events"))["events"]
    assert [(e["type"], e["body"]) for e in event] == [("agent", "Hi, how can I help?")]
    await ws.close()


async def test_a_reconnect_resumes_after_the_cursor_without_loss_or_repeat(
        client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "one")
    ws = await hello(client, token)
    first = await next_of(ws, "events")
    cursor = first["cursor"]
    await ws.close()
    # While the visitor is away: two replies and a session end.
    await reply(client, "two")
    await reply(client, "three")
    ws = await hello(client, token, after=cursor, seen=[e["key"] for e in first["events"]])
    resumed = await next_of(ws, "events")
    assert [e["body"] for e in resumed["events"]] == ["two", "three"]
    await send(client, token, "four")
    assert await bodies_until(ws, "four") == ["four"]
    await ws.close()


async def test_the_session_end_notice_and_the_next_ticket(client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "first")
    (ticket,) = await tickets(client)
    ws = await hello(client, token)
    await next_of(ws, "events")
    await client.post(f"/api/v1/tickets/{ticket['id']}/session/end", headers=AGENT)
    assert [e["type"] for e in (await next_of(ws, "events"))["events"]] == ["ended"]
    await send(client, token, "again")
    assert await bodies_until(ws, "again") == ["again"]
    assert len(await tickets(client)) == 2
    await ws.close()


async def test_agent_typing_reaches_the_visitor(client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "hi")
    (ticket,) = await tickets(client)
    ws = await hello(client, token)
    await next_of(ws, "ready")
    for _ in range(20):  # the process's typing subscription may still be starting
        response = await client.post(f"/api/v1/tickets/{ticket['id']}/typing", headers=AGENT)
        assert response.status == 204
        try:
            assert (await next_of(ws, "typing", timeout_s=0.5))["who"] == "agent"
            break
        except TimeoutError:
            continue
    else:
        pytest.fail("no typing indicator reached the socket")
    await ws.close()


async def test_typing_needs_a_token_and_a_widget_ticket(client: Client) -> None:
    from tests.factories import ids, inbound

    token = await new_visitor(client)
    await send(client, token, "hi")
    (ticket,) = await tickets(client)
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/typing")
    assert response.status == 401
    whatsapp = ids(await inbound(client.app[store_key], "Bonjour"))
    response = await client.post(f"/api/v1/tickets/{whatsapp}/typing", headers=AGENT)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "not_widget"
    response = await client.post("/api/v1/tickets/999999/typing", headers=AGENT)
    assert response.status == 404


async def test_a_socket_from_another_origin_is_refused_before_the_upgrade(
        client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/widget/v1/ws", headers={"Origin": "https://evil.example"})
    assert info.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/widget/v1/ws")


@pytest.mark.parametrize("first", [
    "not json", json.dumps(["hello"]), json.dumps({"type": "hello"}),
    json.dumps({"type": "hello", "token": "forged.token.here"}),
    json.dumps({"type": "hello", "token": 5}),
    json.dumps({"type": "hello", "token": "a.b.c", "seen": "x"}),
    json.dumps({"type": "hello", "token": "a.b.c", "seen": ["1-0_1"] * 201}),
])
async def test_a_bad_hello_closes_the_socket_with_an_error(client: Client, first: str) -> None:
    ws = await client.ws_connect("/widget/v1/ws", headers=WS_HEADERS)
    await ws.send_str(first)
    error = await next_of(ws, "error")
    assert error["code"] in ("invalid", "invalid_token")
    msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code in (4400, 4401)


async def test_bad_socket_messages_are_dropped_and_oversized_ones_close_it(
        client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "hi")
    ws = await hello(client, token)
    await next_of(ws, "ready")
    for junk in ("{", "[]", json.dumps({"type": "read", "key": "nope"}),
                 json.dumps({"type": "read", "key": 5}), json.dumps({"type": "other"})):
        await ws.send_str(junk)
        rejected = await next_of(ws, "rejected")
        assert rejected["code"] == "invalid" and rejected["message"]
    await reply(client, "still alive")
    assert "still alive" in await bodies_until(ws, "still alive")
    await ws.send_str("x" * 20_000)
    msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_long_polling_waits_for_a_reply(client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "hi")
    first = await (await call(client, "poll", {"wait_s": 0}, token=token)).json()
    assert [e["body"] for e in first["events"]] == ["hi"]
    waiting = asyncio.create_task(call(client, "poll", {"after": first["cursor"], "wait_s": 10},
                                       token=token))
    await asyncio.sleep(0.3)
    await reply(client, "answered")
    answer = await (await waiting).json()
    assert [e["body"] for e in answer["events"]] == ["answered"]
    empty = await (await call(client, "poll", {"after": answer["cursor"], "wait_s": 0},
                              token=token)).json()
    assert empty["events"] == []


@pytest.mark.parametrize("body", [{"wait_s": 99}, {"wait_s": "5"}, {"after": "x"},
                                  {"after": 5}, {"extra": True}])
async def test_bad_polls_are_4xx(client: Client, body: dict[str, Any]) -> None:
    token = await new_visitor(client)
    response = await call(client, "poll", body, token=token)
    assert 400 <= response.status < 500


async def test_a_failure_after_the_upgrade_closes_the_socket_cleanly(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once upgraded, an error (here Redis gone) closes with 1011: the edge's 503 answer
    was written into the socket, which the client read as a broken frame."""
    import redis.exceptions

    from bridge.web.widget import widget_store_key
    token = await new_visitor(client)

    async def gone(*args: object) -> None:
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(client.app[widget_store_key], "ticket_ids", gone)
    ws = await hello(client, token)
    msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    assert ws.close_code == 1011
