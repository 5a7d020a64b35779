"""The workspace pages follow the role model: people from Redis sign in with their token,
their role and groups apply to the ticket actions, and a removed person is signed out."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from bridge.store.tickets import TicketStore
from bridge.web.keys import store_key
from tests.conftest import ADMIN_TOKEN
from tests.factories import inbound
from tests.workspace_support import sign_in

Client = TestClient[Any, Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_a_read_only_person_signs_in_and_cannot_note(client: Client) -> None:
    await client.post("/api/v1/groups", json={"name": "fr"}, headers=ADMIN)
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": "ro", "role": "read_only", "groups": ["fr"]})
    token = (await made.json())["token"]
    store: TicketStore = client.app[store_key]
    tid = str((await inbound(store)).ticket_id)
    csrf = await sign_in(client, token)
    assert (await client.get(f"/app/tickets/{tid}")).status == 200
    note = await client.post(f"/app/tickets/{tid}/note",
                             data={"csrf_token": csrf, "body": "a note"})
    assert "read_only role cannot" in await note.text()
    events, _ = await store.events(tid)
    assert [e.type.value for e in events] == ["customer_message"]
    # Removed: the session ends with the record.
    assert (await client.delete("/api/v1/agents/ro", headers=ADMIN)).status == 204
    page = await client.get(f"/app/tickets/{tid}", allow_redirects=False)
    assert page.status in (302, 303, 401)


async def test_pages_show_an_agent_only_their_groups_tickets(client: Client) -> None:
    for group in ("fr", "sn"):
        await client.post("/api/v1/groups", json={"name": group}, headers=ADMIN)
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": "out", "groups": ["sn"]})
    token = (await made.json())["token"]
    store: TicketStore = client.app[store_key]
    theirs = str((await inbound(store, address="whatsapp:+33600000001")).ticket_id)
    other = str((await inbound(store, address="whatsapp:+33600000002")).ticket_id)
    await client.patch(f"/api/v1/tickets/{other}", json={"group": "fr"}, headers=ADMIN)
    await client.patch(f"/api/v1/tickets/{theirs}", json={"group": "sn"}, headers=ADMIN)
    await sign_in(client, token)
    listing = await (await client.get("/app/")).text()
    assert f"/app/tickets/{theirs}" in listing and f"/app/tickets/{other}" not in listing
    assert (await client.get(f"/app/tickets/{other}")).status == 403
    assert (await client.get(f"/app/tickets/{other}/thread")).status == 403
    assert (await client.get(f"/app/tickets/{theirs}")).status == 200
