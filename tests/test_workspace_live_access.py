"""/app/live names only tickets its viewer may read, and ends with the session."""

from __future__ import annotations

import asyncio

from bridge.store.tickets import TicketStore
from bridge.web.keys import store_key
from tests.conftest import ADMIN_TOKEN, Client
from tests.factories import ids, inbound, now_ms
from tests.test_workspace_live import _next_change
from tests.workspace_support import sign_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _agent_of_sn_with_tickets(client: Client) -> tuple[str, str, str]:
    """A token of an agent of group sn; a ticket of sn and one of fr."""
    for group in ("fr", "sn"):
        await client.post("/api/v1/groups", json={"name": group}, headers=ADMIN)
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": "out", "groups": ["sn"]})
    store: TicketStore = client.app[store_key]
    theirs = ids(await inbound(store, address="whatsapp:+33600000001"))
    other = ids(await inbound(store, address="whatsapp:+33600000002"))
    await client.patch(f"/api/v1/tickets/{other}", json={"group": "fr"}, headers=ADMIN)
    await client.patch(f"/api/v1/tickets/{theirs}", json={"group": "sn"}, headers=ADMIN)
    return (await made.json())["token"], theirs, other


async def test_a_stream_names_only_tickets_the_viewer_may_read(client: Client) -> None:
    token, theirs, other = await _agent_of_sn_with_tickets(client)
    await sign_in(client, token)
    assert (await client.get(f"/app/live?ticket={other}")).status == 403
    response = await client.get("/app/live?everything=1")
    assert (await response.content.readline()).startswith(b"retry:")
    store: TicketStore = client.app[store_key]
    await store.update_ticket(other, author="admin", now_ms=now_ms(), tags=["x"])
    await store.update_ticket(theirs, author="admin", now_ms=now_ms(), tags=["y"])
    # The first event the agent hears is about their ticket alone: the other group's
    # change was either left out of the burst or not announced at all.
    change = await asyncio.wait_for(_next_change(response.content), 30)
    assert change["tickets"] == [theirs]
    response.close()


async def test_a_stream_ends_when_its_session_does(client: Client,
                                                  store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    csrf = await sign_in(client, ADMIN_TOKEN)
    response = await client.get(f"/app/live?ticket={tid}")
    assert (await response.content.readline()).startswith(b"retry:")
    signed_out = await client.post("/app/sign-out", data={"csrf_token": csrf},
                                   allow_redirects=False)
    assert signed_out.status == 303
    await store.update_ticket(tid, author="admin", now_ms=now_ms(), tags=["x"])
    async with asyncio.timeout(10):  # a stream that outlives its session never ends
        rest = await response.content.read()
    assert b"event: change" not in rest and response.content.at_eof()
