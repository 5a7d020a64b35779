"""/app/live: a page hears that its ticket (or any ticket) changed."""

from __future__ import annotations

import asyncio
import json

from aiohttp import StreamReader

from bridge.store.tickets import TicketStore
from tests.conftest import AGENT_TOKEN, Client
from tests.factories import ids, inbound, now_ms
from tests.workspace_support import sign_in


async def _next_change(stream: StreamReader) -> dict[str, object]:
    """The next `change` event's data (keep-alive comments and the retry line skipped)."""
    event = ""
    while True:
        line = (await stream.readline()).decode()
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: ") and event == "change":
            return dict(json.loads(line[6:]))


async def test_a_ticket_page_hears_its_ticket_change(client: Client,
                                                     store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await sign_in(client, AGENT_TOKEN)
    response = await client.get(f"/app/live?ticket={tid}")
    assert response.headers["Content-Type"] == "text/event-stream"
    assert (await response.content.readline()).startswith(b"retry:")
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), tags=["x"])
    change = await asyncio.wait_for(_next_change(response.content), 30)
    assert change["tickets"] == [tid]
    response.close()


async def test_the_views_hear_a_new_ticket(client: Client, store: TicketStore) -> None:
    await sign_in(client, AGENT_TOKEN)
    response = await client.get("/app/live?everything=1")
    await response.content.readline()
    tid = ids(await inbound(store, "Nouveau", address="whatsapp:+33600000009"))
    change = await asyncio.wait_for(_next_change(response.content), 30)
    assert change["tickets"] == [tid]
    response.close()


async def test_the_feed_needs_a_session_and_a_known_ticket(client: Client) -> None:
    assert (await client.get("/app/live", allow_redirects=False)).status == 303
    await sign_in(client, AGENT_TOKEN)
    assert (await client.get("/app/live?ticket=424242")).status == 404


async def test_the_streams_end_when_the_process_stops(client: Client) -> None:
    """Stopping, the process ends every stream at once (the page's EventSource connects
    again, to its successor): an open stream would hold the process until aiohttp's
    shutdown timeout. A stream asked for meanwhile opens and ends at once too."""
    await sign_in(client, AGENT_TOKEN)
    streams = [await client.get("/app/live"), await client.get("/app/live?everything=1")]
    for response in streams:
        assert (await response.content.readline()).startswith(b"retry:")
    await client.app.shutdown()  # what the runner runs first when the process stops
    async with asyncio.timeout(10):  # a stream left open never ends: the test fails
        for response in streams:
            await response.content.read()  # to the end of the stream
            assert response.content.at_eof()
        late = await client.get("/app/live")
        assert late.status == 200
        assert (await late.content.read()).startswith(b"retry:")
