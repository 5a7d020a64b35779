"""The workspace's form POSTs read their bodies as the API does: under the body deadline
(408), and a body that is not a form is a 400 (not a 500 with a traceback in the log)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.settings import Settings
from tests.conftest import AGENT_TOKEN, make_settings
from tests.workspace_support import sign_in

Client = TestClient[Any, Any]
STALLED_HEAD = (b"POST /app/sign-in HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\nnext=%2F")


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, body_read_timeout_s=0.5)


async def _connect(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.host, client.port)


async def test_a_stalled_sign_in_body_is_cut_off_with_408(client: Client) -> None:
    # It waited for ever: any anonymous client could hold connections and tasks open.
    reader, writer = await _connect(client)
    try:
        writer.write(STALLED_HEAD)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status.startswith(b"HTTP/1.1 408"), status
    finally:
        writer.close()


async def test_a_stalled_page_form_is_cut_off_with_408(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    cookies = "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)
    reader, writer = await _connect(client)
    try:
        writer.write(b"POST /app/tickets/1/note HTTP/1.1\r\nHost: x\r\nCookie: " +
                     cookies.encode() + b"\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nSec-Fetch-Mode: navigate\r\nContent-Length: 1000\r\n\r\nbody=hi")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status.startswith(b"HTTP/1.1 408"), status
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/app/sign-in", "/app/tickets/1/note"])
async def test_a_multipart_body_without_boundary_is_a_400(client: Client, path: str,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    await sign_in(client, AGENT_TOKEN)
    with caplog.at_level(logging.ERROR, logger="bridge.web"):
        answer = await client.post(path, data=b"x=1",
                                   headers={"Content-Type": "multipart/form-data"})
    assert answer.status == 400  # a 500 and a traceback in the log
    assert "the form could not be read" in await answer.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
