"""Teams in the workspace pages: a ticket's group and fields on its page (edited through the
API's rules), saved views on the tickets page, and the availability toggle."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.core.tickets import Status
from bridge.store.teams import TeamStore
from bridge.store.tickets import TicketStore
from bridge.store.views import ViewStore
from bridge.web.keys import redis_key, store_key
from tests.conftest import ADMIN_TOKEN
from tests.factories import inbound
from tests.workspace_support import sign_in

Client = TestClient[Any, Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FIELDS: dict[str, dict[str, Any]] = {
    "country": {"type": "dropdown", "options": ["fr", "sn"], "required_on_solve": True},
    "order_no": {"type": "number", "title": "Order number"},
    "vip": {"type": "checkbox"},
    "products": {"type": "multiselect", "options": ["phone", "sim", "box"]},
    "due": {"type": "date"},
    "summary": {"type": "text"},
    "region": {"type": "text", "groups": ["sn"]},
}


async def person(client: Client, name: str, role: str, groups: list[str]) -> str:
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": name, "role": role, "groups": groups})
    assert made.status == 201, await made.text()
    token: str = (await made.json())["token"]
    return token


async def teams(client: Client) -> None:
    for group in ("fr", "sn"):
        assert (await client.post("/api/v1/groups", json={"name": group},
                                  headers=ADMIN)).status == 201
    for key, body in FIELDS.items():
        assert (await client.put(f"/api/v1/fields/{key}", json=body,
                                 headers=ADMIN)).status == 200


async def ticket_in(client: Client, group: str, address: str = "whatsapp:+33600000001"
                    ) -> str:
    store: TicketStore = client.app[store_key]
    tid = str((await inbound(store, "Bonjour", address=address)).ticket_id)
    if group:
        assert (await client.patch(f"/api/v1/tickets/{tid}", json={"group": group},
                                   headers=ADMIN)).status == 200
    return tid


def flash(html: str) -> str:
    found = re.search(r'class="flash flash-(\w+)"[^>]*>([^<]*)<', html)
    assert found, "no flash message"
    return f"{found.group(1)}: {found.group(2)}"


async def test_a_manager_moves_a_ticket_and_fills_its_typed_fields(client: Client) -> None:
    await teams(client)
    token = await person(client, "mgr", "manager", ["fr", "sn"])
    tid = await ticket_in(client, "")
    csrf = await sign_in(client, token)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert 'id="ticket-group">shared pool<' in page
    group_select = page[page.index('id="group"'):page.index("</select>", page.index('id="group"'))]
    assert re.findall(r'value="(\w*)"', group_select) == ["", "fr", "sn"]
    assert 'type="number" step="any" id="field-order_no"' in page
    assert 'type="date" id="field-due"' in page and 'id="field-region"' not in page
    assignees = page[page.index('id="assignee"'):page.index("</select>",
                                                           page.index('id="assignee"'))]
    assert 'value="mgr"' in assignees  # people from Redis, not only token agents
    answer = await client.post(f"/app/tickets/{tid}/update", data=[
        ("csrf_token", csrf), ("status", "open"), ("assignee", ""), ("tags", ""),
        ("group", "sn"), ("fields_shown", "1"), ("field.country", "sn"),
        ("field.order_no", "4521"), ("field.vip", "1"), ("field.products", "sim"),
        ("field.products", "phone"), ("field.due", "2026-12-24"), ("field.summary", " "),
        ("field.region", "ignored: not on the pool's form")])
    assert flash(await answer.text()) == "notice: Ticket updated"
    ticket = await client.app[store_key].get_ticket(tid)
    assert ticket.group == "sn" and ticket.status is Status.OPEN
    assert ticket.field_values == {"country": "sn", "order_no": 4521, "vip": True,
                                   "products": ["phone", "sim"], "due": "2026-12-24"}
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert 'id="field-region"' in page and 'id="ticket-group">sn<' in page
    assert re.search(r'id="field-vip" name="field.vip" value="1" checked', page)
    # Unticking and emptying clear the values; unchanged ones are not sent again.
    await client.post(f"/app/tickets/{tid}/update", data=[
        ("csrf_token", csrf), ("status", "open"), ("assignee", ""), ("tags", ""),
        ("group", "sn"), ("fields_shown", "1"), ("field.country", "sn"),
        ("field.order_no", "4521.5"), ("field.due", ""), ("field.products", "sim"),
        ("field.region", "Dakar")])
    ticket = await client.app[store_key].get_ticket(tid)
    assert ticket.field_values == {"country": "sn", "order_no": 4521.5, "vip": False,
                                   "products": ["sim"], "region": "Dakar"}


async def test_bad_field_values_and_a_solve_without_required_fields_write_nothing(
        client: Client) -> None:
    await teams(client)
    token = await person(client, "mgr", "manager", ["fr"])
    tid = await ticket_in(client, "fr")
    store: TicketStore = client.app[store_key]
    before_events, _ = await store.events(tid)
    before = await store.get_ticket(tid)
    csrf = await sign_in(client, token)
    base = {"csrf_token": csrf, "status": "new", "assignee": "", "tags": "",
            "group": "fr", "fields_shown": "1"}
    for extra, expected in (
            ({"field.order_no": "forty-two"}, "error: order_no: a number"),
            ({"field.order_no": "nan"}, "error: order_no: a number"),
            ({"field.country": "xx"}, "error: country: one of fr, sn"),
            ({"field.due": "24/12/2026"}, "error: due: a date as YYYY-MM-DD"),
            ({"field.products": "car"}, "error: products: a list of phone, sim, box"),
            ({"status": "solved"}, "error: fill these fields to solve: country"),
            ({"group": "nowhere"}, "error: group must name a group")):
        answer = await client.post(f"/app/tickets/{tid}/update", data={**base, **extra})
        assert flash(await answer.text()).startswith(expected), extra
    after_events, _ = await store.events(tid)
    assert len(after_events) == len(before_events)
    assert await store.get_ticket(tid) == before
    # The same request may fill the required field and solve.
    await client.post(f"/app/tickets/{tid}/update",
                      data={**base, "status": "solved", "field.country": "fr"})
    assert (await store.get_ticket(tid)).status is Status.SOLVED


async def test_an_agent_sees_the_group_but_cannot_move_the_ticket(client: Client) -> None:
    await teams(client)
    token = await person(client, "awa", "agent", ["fr"])
    tid = await ticket_in(client, "fr")
    csrf = await sign_in(client, token)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert 'id="ticket-group">fr<' in page and 'id="group"' not in page
    forged = await client.post(f"/app/tickets/{tid}/update", data={
        "csrf_token": csrf, "status": "new", "assignee": "", "tags": "", "group": "sn",
        "fields_shown": "1", "field.country": "sn"})
    assert flash(await forged.text()) == ("error: agents cannot move tickets between "
                                          "groups")
    ticket = await client.app[store_key].get_ticket(tid)
    assert ticket.group == "fr" and ticket.field_values == {}
    # Without a CSRF token nothing is even read.
    refused = await client.post(f"/app/tickets/{tid}/update", data={"group": "sn"})
    assert refused.status == 403


async def test_saved_views_are_listed_with_counts_and_paged(client: Client) -> None:
    await teams(client)
    manager = await person(client, "mgr", "manager", ["fr"])
    agent = await person(client, "awa", "agent", ["fr"])
    for n in range(30):
        await ticket_in(client, "fr" if n % 3 else "sn", address=f"whatsapp:+336000002{n:02d}")
    auth = {"Authorization": f"Bearer {manager}"}
    shared = await client.post("/api/v1/views", headers=auth, json={
        "name": "Unsolved", "conditions": {"status_below": "solved"}, "shared": True})
    mine = await client.post("/api/v1/views", headers=auth, json={
        "name": "Manager's own", "conditions": {}})
    shared_id, mine_id = (await shared.json())["id"], (await mine.json())["id"]
    await sign_in(client, agent)
    listing = await (await client.get("/app/")).text()
    # The agent sees the pool and fr: 20 of the 30 tickets; not the manager's own view.
    assert re.search(rf'data-view="{shared_id}">Unsolved</a> <span class="count">20<', listing)
    assert "Manager's own" not in listing
    first = await (await client.get(f"/app/saved-views/{shared_id}")).text()
    assert 'id="view-count">20<' in first and first.count("data-ticket=") == 20
    # 20 fit on the first page: no next link. With more tickets, the cursor pages on.
    for n in range(10):
        await ticket_in(client, "fr", address=f"whatsapp:+336000003{n:02d}")
    # (The relay's teams consumer keeps the sets; here the view is built again.)
    view_store = ViewStore(client.app[redis_key])
    await view_store.rebuild(await view_store.get_view(shared_id), client.app[store_key])
    first = await (await client.get(f"/app/saved-views/{shared_id}")).text()
    assert first.count("data-ticket=") == 25
    next_link = re.search(r'href="(/app/saved-views/\d+\?cursor=[^"]+)" rel="next"', first)
    assert next_link
    second = await (await client.get(next_link.group(1).replace("&amp;", "&"))).text()
    assert second.count("data-ticket=") == 5 and 'rel="next"' not in second
    shown = set(re.findall(r'data-ticket="(\d+)"', first + second))
    assert len(shown) == 30
    assert (await client.get(f"/app/saved-views/{shared_id}?cursor=nonsense")).status == 422
    assert (await client.get(f"/app/saved-views/{mine_id}")).status == 404
    assert (await client.get("/app/saved-views/999")).status == 404


async def test_the_availability_toggle(client: Client) -> None:
    token = await person(client, "awa", "agent", [])
    reader = await person(client, "ro", "read_only", [])
    people = TeamStore(client.app[redis_key])
    csrf = await sign_in(client, token)
    page = await (await client.get("/app/")).text()
    assert 'aria-pressed="false"' in page and "Available for assignment: no" in page
    on = await client.post("/app/availability", data={
        "csrf_token": csrf, "available": "1", "next": "/app/reports"})
    assert flash(await on.text()) == "notice: You are available for assignment"
    assert on.url.path == "/app/reports"
    found = await people.find_person("awa")
    assert found is not None and found.available
    french = await (await client.get("/app/", headers={"Accept-Language": "fr"})).text()
    assert "Disponible pour l&#39;assignation: oui" in french
    bad = await client.post("/app/availability", data={"csrf_token": csrf, "available": "x"})
    assert flash(await bad.text()) == "error: available must be 0 or 1"
    assert (await client.post("/app/availability", data={"available": "0"})).status == 403
    found = await people.find_person("awa")
    assert found is not None and found.available
    # A read-only person has no toggle, and a forged one is refused.
    csrf = await sign_in(client, reader)
    assert "Available for assignment" not in await (await client.get("/app/")).text()
    refused = await client.post("/app/availability", data={"csrf_token": csrf,
                                                          "available": "1"})
    assert "read_only role cannot" in flash(await refused.text())
    found = await people.find_person("ro")
    assert found is not None and not found.available


async def test_a_stale_update_form_writes_only_what_was_changed_on_it(client: Client) -> None:
    """The form is a snapshot: submitted later, it wrote every control back, undoing what
    others did meanwhile (a status, a tag, a field). Now only the controls changed on it
    are written, and tags by what was added or removed."""
    await teams(client)
    manager = await person(client, "mgr", "manager", ["fr"])
    agent = await person(client, "awa", "agent", ["fr"])
    tid = await ticket_in(client, "fr")
    await client.patch(f"/api/v1/tickets/{tid}", headers=ADMIN,
                       json={"status": "open", "tags": ["old"], "assignee": "awa"})
    csrf = await sign_in(client, manager)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    shown = html.unescape(re.search(r'name="shown" value="([^"]*)"', page)[1])
    # Meanwhile, through the API:
    meanwhile = await client.patch(f"/api/v1/tickets/{tid}", headers={
        "Authorization": f"Bearer {agent}"}, json={
        "status": "pending", "tags": ["old", "vip"], "fields": {"country": "sn"}})
    assert meanwhile.status == 200, await meanwhile.text()
    # The manager submits the form as it was drawn, with the assignee changed and the
    # "old" tag taken off.
    answer = await client.post(f"/app/tickets/{tid}/update", data={
        "csrf_token": csrf, "shown": shown, "status": "open", "assignee": "mgr",
        "tags": "", "group": "fr", "fields_shown": "1", "field.country": ""})
    assert flash(await answer.text()) == "notice: Ticket updated"
    ticket = await client.app[store_key].get_ticket(tid)
    assert ticket.assignee == "mgr" and ticket.status is Status.PENDING
    assert ticket.tags == ("vip",) and ticket.field_values == {"country": "sn"}
    unchanged = await client.post(f"/app/tickets/{tid}/update", data={
        "csrf_token": csrf, "shown": shown, "status": "open", "assignee": "awa",
        "tags": "old", "group": "fr"})
    assert flash(await unchanged.text()) == "notice: No change"


async def test_a_save_keeps_values_the_form_cannot_show_as_they_were(client: Client) -> None:
    """A dropdown value no longer among the options had no option to be drawn with: the
    browser sent "–" and a save of the tags cleared it; a text with spaces set through the
    API was rewritten stripped by a save that changed nothing."""
    await teams(client)
    tid = await ticket_in(client, "")
    await client.patch(f"/api/v1/tickets/{tid}", headers=ADMIN, json={
        "fields": {"country": "sn", "products": ["box", "sim"], "summary": "  padded  "}})
    for key, options in (("country", ["fr"]), ("products", ["phone", "sim"])):
        body = {**FIELDS[key], "options": options}
        assert (await client.put(f"/api/v1/fields/{key}", json=body,
                                 headers=ADMIN)).status == 200
    csrf = await sign_in(client, ADMIN_TOKEN)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert '<option value="sn" selected>sn</option>' in page
    assert re.search(r'name="field.products" value="box" checked', page)
    shown = html.unescape(re.search(r'name="shown" value="([^"]*)"', page)[1])
    form = {"csrf_token": csrf, "shown": shown, "status": "new", "assignee": "",
            "group": "", "fields_shown": "1", "field.country": "sn",
            "field.summary": "padded"}
    unchanged = await client.post(f"/app/tickets/{tid}/update", data=[
        *form.items(), ("tags", ""), ("field.products", "box"), ("field.products", "sim")])
    assert flash(await unchanged.text()) == "notice: No change"
    tagged = await client.post(f"/app/tickets/{tid}/update", data=[
        *form.items(), ("tags", "vip"), ("field.products", "box"), ("field.products", "sim")])
    assert flash(await tagged.text()) == "notice: Ticket updated"
    ticket = await client.app[store_key].get_ticket(tid)
    assert ticket.tags == ("vip",)
    assert {**ticket.field_values, "products": sorted(ticket.field_values["products"])} == {
        "country": "sn", "products": ["box", "sim"], "summary": "  padded  "}
