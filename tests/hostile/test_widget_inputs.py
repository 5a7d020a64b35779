"""Hostile input to the widget, over a real socket: every bad HTTP call or WebSocket message
is a clear 4xx (or a closed socket), never a 5xx, and writes nothing to the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import redis

from tests.conftest import make_settings
from tests.hostile.conftest import live_server, snapshot

ORIGIN = "https://shop.example.com"


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        with live_server(make_settings(redis_url, widget_origins=(ORIGIN,))) as url:
            yield url
    finally:
        client.flushdb()
        client.close()


def token(live: str) -> str:
    answer = httpx.post(f"{live}/widget/v1/session", headers={"Origin": ORIGIN}, timeout=10)
    assert answer.status_code == 200
    return str(answer.json()["token"])


def ticket_keys(client: redis.Redis) -> dict[bytes, bytes | None]:
    """The store's keys (flood-control counters aside: counting a refused call is the
    point of them)."""
    return {k: v for k, v in snapshot(client).items() if b":flood:" not in k}


BAD_CALLS: list[tuple[str, dict[str, str], bytes]] = [
    ("messages", {"Content-Type": "application/json"}, b"{"),
    ("messages", {"Content-Type": "application/json"}, b"\xff\xfe"),
    ("messages", {"Content-Type": "application/json"}, b'{"client_id": "\\ud800aaaaaaa"}'),
    ("messages", {"Content-Type": "application/json"}, b"[" * 10000),
    ("messages", {"Content-Type": "text/plain"}, b'{"client_id": "abcdefgh", "body": "x"}'),
    ("messages", {"Content-Type": "application/json"},
     json.dumps({"client_id": "abcdefgh", "body": "x" * 70_000}).encode()),
    ("messages", {"Content-Type": "application/json"},
     json.dumps({"client_id": "abcdefgh", "body": "a\u0000b"}).encode()),
    ("messages", {"Content-Type": "application/json"},
     json.dumps({"client_id": "../../../../", "body": "x"}).encode()),
    ("messages", {"Content-Type": "application/json"},
     json.dumps({"client_id": "abcdefgh", "button": "csat:1:5:extra"}).encode()),
    ("messages", {"Content-Type": "application/json"},
     json.dumps({"client_id": "abcdefgh", "body": {"$gt": ""}}).encode()),
    ("history", {"Content-Type": "application/json"}, json.dumps({"limit": 10**9}).encode()),
    ("history", {"Content-Type": "application/json"},
     json.dumps({"before": "99999999999999999999-0_1"}).encode()),
    ("history", {"Content-Type": "application/json"}, json.dumps({"limit": True}).encode()),
    ("read", {"Content-Type": "application/json"}, json.dumps({"key": "1-0_1 OR 1"}).encode()),
    ("read", {"Content-Type": "application/json"}, json.dumps({}).encode()),
    ("poll", {"Content-Type": "application/json"}, json.dumps({"wait_s": -1}).encode()),
    ("poll", {"Content-Type": "application/json"}, json.dumps({"wait_s": 1e308}).encode()),
    ("session", {"Content-Type": "application/json"},
     json.dumps({"user_jwt": "e30.e30." + "A" * 5000}).encode()),
    ("session", {"Content-Type": "application/json"}, json.dumps({"user_jwt": 7}).encode()),
]


@pytest.mark.parametrize(("path", "headers", "body"), BAD_CALLS,
                         ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(BAD_CALLS)])
def test_bad_widget_calls_are_4xx_and_write_nothing(
        live: str, redis_url: str, path: str, headers: dict[str, str], body: bytes) -> None:
    client = redis.Redis.from_url(redis_url)
    visitor = token(live)
    before = ticket_keys(client)
    answer = httpx.post(f"{live}/widget/v1/{path}", content=body, timeout=10, headers={
        "Origin": ORIGIN, "Authorization": f"Bearer {visitor}", **headers})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"]
    assert ticket_keys(client) == before
    client.close()


@pytest.mark.parametrize("authorization", [
    "", "Bearer", "Bearer \udcff", "Basic abc", "Bearer " + "a" * 10_000,
    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ2In0.",
])
def test_bad_visitor_credentials_are_401(live: str, redis_url: str,
                                         authorization: str) -> None:
    client = redis.Redis.from_url(redis_url)
    before = ticket_keys(client)
    headers = {"Origin": ORIGIN.encode(),
               "Authorization": authorization.encode("utf-8", "surrogateescape")}
    answer = httpx.post(f"{live}/widget/v1/messages", timeout=10, headers=headers,
                        json={"client_id": "abcdefgh", "body": "x"})
    assert answer.status_code in (400, 401), answer.text
    assert ticket_keys(client) == before
    client.close()


async def _socket_session(live: str, frames: list[Any]) -> list[Any]:
    """Send frames after connecting; collect what comes back until the socket closes or
    a second passes quietly."""
    got: list[Any] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{live}/widget/v1/ws", headers={"Origin": ORIGIN}) as ws:
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), 1.0)
            except TimeoutError:
                break
            if msg.type is aiohttp.WSMsgType.TEXT:
                got.append(json.loads(msg.data))
            else:
                got.append(msg.type)
                break
    return got


@pytest.mark.parametrize("frames", [
    [b"\x00\x01binary"],
    ["x" * 100_000],
    ["{" * 5000],
    ["[" * 5000],  # RecursionError, not a ValueError: a 500 written into the open socket
    [json.dumps({"type": "hello", "token": "x" * 9000})],
    [json.dumps({"type": "hello", "token": "a.b.c", "after": "DROP"})],
    [json.dumps({"type": "hello", "token": "a.b.c", "after": ["1-0_1"]})],
])
def test_hostile_socket_frames_close_it_and_write_nothing(
        live: str, redis_url: str, frames: list[Any]) -> None:
    client = redis.Redis.from_url(redis_url)
    before = ticket_keys(client)
    got = asyncio.run(_socket_session(live, frames))
    # An error frame, then the close; a frame past the size limit is closed at once.
    assert ((isinstance(got[0], dict) and got[0]["type"] == "error")
            or got == [aiohttp.WSMsgType.CLOSE]), got
    assert ticket_keys(client) == before
    client.close()


def test_socket_junk_after_a_good_hello_writes_nothing(live: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    visitor = token(live)
    before = ticket_keys(client)
    junk = [json.dumps({"type": "hello", "token": visitor}), "{", "[]", "null", "[" * 5000,
            json.dumps({"type": "read", "key": "9" * 15 + "-0_" + "9" * 15}),
            json.dumps({"type": "read", "key": {"a": 1}}), json.dumps({"type": "send"})]
    got = asyncio.run(_socket_session(live, junk))
    assert {"type": "ready"} in got
    assert sum(1 for g in got if isinstance(g, dict) and g["type"] == "rejected") == 6, got
    # A read position past the thread's end (here: no thread at all) is not stored.
    assert ticket_keys(client) == before
    client.close()
