"""The ticket page offers only what its viewer can do to the ticket in its state: no form
whose every post the server refuses (a read-only person's reply, a closed ticket's update),
and an assignee select of the people the viewer may give the ticket to."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.store.tickets import TicketStore
from bridge.web.keys import store_key
from tests.conftest import ADMIN_TOKEN
from tests.factories import inbound
from tests.workspace_support import sign_in

Client = TestClient[Any, Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ACTIONS = ("reply", "note", "macro", "update", "end-session")


def forms(html: str, ticket_id: str) -> set[str]:
    """The actions of the ticket's forms on the page."""
    return set(re.findall(rf'action="/app/tickets/{ticket_id}/([a-z-]+)"', html))


def assignee_options(html: str) -> list[str]:
    select = re.search(r'<select id="assignee" name="assignee">(.*?)</select>', html, re.S)
    assert select, "no assignee select"
    return re.findall(r'<option value="([^"]*)"', select.group(1))


async def person(client: Client, name: str, role: str = "agent",
                 groups: tuple[str, ...] = ()) -> str:
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": name, "role": role, "groups": list(groups)})
    assert made.status == 201, await made.text()
    return str((await made.json())["token"])


async def groups(client: Client, *names: str) -> None:
    for name in names:
        assert (await client.post("/api/v1/groups", json={"name": name},
                                  headers=ADMIN)).status == 201


async def test_a_read_only_viewer_gets_no_form(client: Client) -> None:
    await groups(client, "fr")
    token = await person(client, "ro", "read_only", ("fr",))
    store: TicketStore = client.app[store_key]
    pooled = str((await inbound(store, address="whatsapp:+33600000001")).ticket_id)
    grouped = str((await inbound(store, address="whatsapp:+33600000002")).ticket_id)
    await client.patch(f"/api/v1/tickets/{grouped}", json={"group": "fr"}, headers=ADMIN)
    await sign_in(client, token)
    for tid in (pooled, grouped):
        page = await client.get(f"/app/tickets/{tid}")
        assert page.status == 200
        html = await page.text()
        assert forms(html, tid) == set(), tid
        assert 'id="assignee"' not in html and 'id="reply-body"' not in html


async def test_an_agent_reading_another_agents_ticket_may_only_note(client: Client) -> None:
    store: TicketStore = client.app[store_key]
    tid = str((await inbound(store)).ticket_id)
    await person(client, "bea")
    await client.patch(f"/api/v1/tickets/{tid}", json={"assignee": "bea"}, headers=ADMIN)
    await sign_in(client, await person(client, "cid"))
    assert forms(await (await client.get(f"/app/tickets/{tid}")).text(), tid) == {"note"}


async def test_a_closed_ticket_offers_the_note_alone(client: Client) -> None:
    store: TicketStore = client.app[store_key]
    tid = str((await inbound(store)).ticket_id)
    csrf = await sign_in(client, ADMIN_TOKEN)
    assert forms(await (await client.get(f"/app/tickets/{tid}")).text(), tid) == set(ACTIONS)
    closed = await client.patch(f"/api/v1/tickets/{tid}", json={"status": "closed"},
                                headers=ADMIN)
    assert closed.status == 200, await closed.text()
    html = await (await client.get(f"/app/tickets/{tid}")).text()
    assert forms(html, tid) == {"note"}
    assert 'id="ticket-final"' in html
    # What stays is usable: the note is recorded.
    noted = await client.post(f"/app/tickets/{tid}/note",
                              data={"csrf_token": csrf, "body": "after the close"})
    assert noted.status == 200 and "Note added" in await noted.text()
    events, _ = await store.events(tid)
    assert any(e.type.value == "note" and e.body == "after the close" for e in events)


async def test_the_assignees_of_a_grouped_ticket_are_its_members(client: Client) -> None:
    await groups(client, "fr", "en")
    awa = await person(client, "awa", groups=("fr",))
    await person(client, "eli", groups=("en",))
    await person(client, "fay", "manager", ("fr", "en"))
    await person(client, "ro", "read_only", ("fr",))
    store: TicketStore = client.app[store_key]
    tid = str((await inbound(store)).ticket_id)
    pooled = str((await inbound(store, address="whatsapp:+33600000009")).ticket_id)
    await client.patch(f"/api/v1/tickets/{tid}", json={"group": "fr"}, headers=ADMIN)
    await sign_in(client, ADMIN_TOKEN)
    html = await (await client.get(f"/app/tickets/{tid}")).text()
    # Not eli (en), not alice (a token agent of no group), not ro (read-only).
    assert assignee_options(html) == ["", "awa", "fay"]
    # The shared pool's tickets go to anyone who works tickets.
    html = await (await client.get(f"/app/tickets/{pooled}")).text()
    assert assignee_options(html) == ["", "alice", "awa", "eli", "fay"]
    # Every option is one the update takes.
    csrf = await sign_in(client, ADMIN_TOKEN)
    for name in ("awa", "fay", ""):
        saved = await client.post(f"/app/tickets/{tid}/update", data={
            "csrf_token": csrf, "status": "open", "assignee": name, "tags": "",
            "group": "fr"})
        assert "Ticket updated" in await saved.text(), name
    # An agent: themselves or nobody.
    await sign_in(client, awa)
    assert assignee_options(await (await client.get(f"/app/tickets/{tid}")).text()) == [
        "", "awa"]
