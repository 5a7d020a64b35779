"""The permission matrix: every API route for every role, through the real app.

Roles: the bootstrap admin (BRIDGE_ADMIN_TOKEN), a manager, an agent and a read-only person
of group "fr", and an agent of group "sn" (an outsider to the tickets of "fr"). Ticket T is
in group fr and unassigned; ticket A is in group fr and assigned to another agent, ag2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.store.tickets import TicketStore
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.factories import inbound, post_signed

Client = TestClient[Any, Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROLES = ("admin", "manager", "agent", "read_only", "outsider")
WORKERS = ("admin", "manager", "agent")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {T}, {A}: the tickets above
    allowed: tuple[str, ...]
    ok: int = 200  # the answer of an allowed role (0: anything but 401/403)
    body: dict[str, Any] | None = None
    denied: int = 403
    exceptions: dict[str, int] = field(default_factory=dict)


ALL = ROLES
MATRIX: list[Route] = [
    Route("GET", "/api/v1/tickets", ALL),
    Route("GET", "/api/v1/tickets/{T}", ("admin", "manager", "agent", "read_only")),
    Route("GET", "/api/v1/tickets/{T}/events", ("admin", "manager", "agent", "read_only")),
    Route("PATCH", "/api/v1/tickets/{T}", WORKERS, body={"status": "open"}),
    Route("PATCH", "/api/v1/tickets/{A}", ("admin", "manager"), body={"status": "open"}),
    Route("PATCH", "/api/v1/tickets/{T}", ("admin", "manager"), body={"assignee": "ag2"}),
    Route("PATCH", "/api/v1/tickets/{T}", WORKERS, body={"assignee": "ag"},
          exceptions={"manager": 200}),
    # An admin is not an agent (README's matrix): 403, not a 422 about the assignee.
    Route("POST", "/api/v1/tickets/{T}/take", ("manager", "agent")),
    Route("POST", "/api/v1/tickets/{T}/notes", WORKERS, 201, {"body": "note"}),
    Route("POST", "/api/v1/tickets/{A}/notes", WORKERS, 201, {"body": "note"}),
    Route("POST", "/api/v1/tickets/{T}/replies", WORKERS, 202, {"body": "hello"}),
    Route("POST", "/api/v1/tickets/{A}/replies", ("admin", "manager"), 202, {"body": "hi"}),
    Route("POST", "/api/v1/tickets/{T}/session/end", WORKERS),
    # A WhatsApp ticket has no typing indicator: 422 for those who may work it.
    Route("POST", "/api/v1/tickets/{T}/typing", WORKERS, 0),
    Route("POST", "/api/v1/tickets/{T}/macros/greeting", WORKERS, 202),
    Route("GET", "/api/v1/macros", ALL),
    Route("GET", "/api/v1/macros/greeting", ALL),
    Route("PUT", "/api/v1/macros/greeting", ("admin",), 0,
          {"locales": {"en": "Hello {{ contact.name }}"}}),
    Route("POST", "/api/v1/macros/greeting/preview", ALL, 0, {}),
    Route("POST", "/api/v1/macros/greeting/validate", ALL, 0, {}),
    Route("POST", "/api/v1/macros/greeting/rollback", ("admin",), 0, {"version": 1}),
    Route("GET", "/api/v1/macros/greeting/versions", ALL),
    Route("GET", "/api/v1/reports/csat", ALL),
    Route("GET", "/api/v1/me", ALL),
    Route("PUT", "/api/v1/me/availability", ("manager", "agent", "outsider"),
          body={"available": True}, exceptions={"admin": 409}),
    Route("GET", "/api/v1/agents", ALL),
    Route("POST", "/api/v1/agents", ("admin",), 201, {"name": "newbie", "groups": ["fr"]}),
    Route("GET", "/api/v1/agents/ag2", ALL),
    Route("PATCH", "/api/v1/agents/ag2", ("admin",), body={"capacity": 3}),
    Route("DELETE", "/api/v1/agents/out", ("admin",), 204),  # ag2 holds A: 409
    Route("POST", "/api/v1/agents/ag2/token", ("admin",)),
    Route("GET", "/api/v1/groups", ALL),
    Route("POST", "/api/v1/groups", ("admin",), 201, {"name": "ml"}),
    Route("DELETE", "/api/v1/groups/empty", ("admin",), 204),
    Route("GET", "/api/v1/fields", ALL),
    Route("PUT", "/api/v1/fields/country", ("admin",), body={"type": "text"}),
    Route("DELETE", "/api/v1/fields/topic", ("admin",), 204),
    Route("GET", "/api/v1/views", ALL),
    Route("POST", "/api/v1/views", ("admin", "manager", "agent", "outsider"), 201,
          {"name": "mine", "conditions": {"status_below": "solved"}}),
    Route("POST", "/api/v1/views", ("admin", "manager"), 201,
          {"name": "team", "shared": True, "conditions": {}}),
    Route("GET", "/api/v1/views/{V}", ALL),
    Route("GET", "/api/v1/views/{V}/tickets", ALL),
    Route("PATCH", "/api/v1/views/{V}", ("admin", "manager"), body={"name": "renamed"}),
    Route("DELETE", "/api/v1/views/{V}", ("admin", "manager"), 204),
    Route("GET", "/api/v1/views/counts", ALL),
    Route("GET", "/api/v1/reports/overview", ALL),
    # Webhook export and bulk export: admin only (their own tests cover what they do).
    Route("GET", "/api/v1/export/tickets", ("admin",)),
    Route("GET", "/api/v1/export/events", ("admin",)),
    Route("GET", "/api/v1/webhook-endpoints", ("admin",)),
    Route("POST", "/api/v1/webhook-endpoints", ("admin",), 0, {}),
    Route("GET", "/api/v1/webhook-endpoints/nope", ("admin",), 0),
    Route("PATCH", "/api/v1/webhook-endpoints/nope", ("admin",), 0, {}),
    Route("DELETE", "/api/v1/webhook-endpoints/nope", ("admin",), 0),
    Route("GET", "/api/v1/webhook-endpoints/nope/failed", ("admin",), 0),
    Route("GET", "/api/v1/webhook-endpoints/nope/health", ("admin",), 0),
    Route("POST", "/api/v1/webhook-endpoints/nope/replay", ("admin",), 0, {}),
    Route("POST", "/api/v1/webhook-endpoints/nope/rotate-secret", ("admin",), 0, {}),
]

# Routes other modules own whose rule is "admin only" or "any principal"; listed so the
# completeness check below knows them (their own tests cover their behaviour).
ELSEWHERE: frozenset[tuple[str, str]] = frozenset()


@dataclass
class World:
    tokens: dict[str, str]
    ids: dict[str, str]


async def _world(client: Client, store: TicketStore) -> World:
    async def admin(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.request(method, path, json=body, headers=ADMIN)
        assert response.status in (200, 201), await response.text()
        return dict(await response.json())

    for group in ("fr", "sn", "empty"):
        await admin("POST", "/api/v1/groups", {"name": group})
    tokens = {"admin": ADMIN_TOKEN}
    for name, role, group in (("mgr", "manager", "fr"), ("ag", "agent", "fr"),
                              ("ro", "read_only", "fr"), ("out", "agent", "sn"),
                              ("ag2", "agent", "fr")):
        made = await admin("POST", "/api/v1/agents", {"name": name, "role": role,
                                                       "groups": [group]})
        tokens[{"mgr": "manager", "ag": "agent", "ro": "read_only", "out": "outsider",
                "ag2": "ag2"}[name]] = made["token"]
    await admin("PUT", "/api/v1/fields/topic", {"type": "text"})
    ids = {}
    for key, address in (("T", "whatsapp:+33600000001"), ("A", "whatsapp:+33600000002")):
        routed = await inbound(store, address=address)
        assert routed.ticket_id
        ids[key] = routed.ticket_id
        await admin("PATCH", f"/api/v1/tickets/{routed.ticket_id}", {"group": "fr"})
    await admin("PATCH", f"/api/v1/tickets/{ids['A']}", {"assignee": "ag2"})
    view = await admin("POST", "/api/v1/views", {"name": "shared", "shared": True,
                                                 "conditions": {"group": ["fr"]}})
    ids["V"] = view["id"]
    return World(tokens, ids)


@pytest.fixture
async def store_of(client: Client) -> TicketStore:
    from bridge.web.keys import store_key
    return client.app[store_key]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", MATRIX, ids=lambda r: f"{r.method} {r.path} {r.body or ''}")
async def test_route_by_role(client: Client, store_of: TicketStore, route: Route,
                             role: str) -> None:
    world = await _world(client, store_of)
    path = route.path.format(**world.ids)
    headers = {"Authorization": f"Bearer {world.tokens[role]}"}
    response = await client.request(route.method, path, headers=headers,
                                    json=route.body if route.body is not None else None)
    text = await response.text()
    if role in route.exceptions:
        assert response.status == route.exceptions[role], text
    elif role in route.allowed:
        assert response.status not in (401, 403), text
        if route.ok:
            assert response.status == route.ok, text
    else:
        assert response.status == route.denied, text
        assert (await response.json())["error"]["code"] == "forbidden"


def test_every_api_route_is_in_the_matrix(app: Any) -> None:
    covered = {(r.method, r.path.replace("{T}", "{id}").replace("{A}", "{id}")
                .replace("{V}", "{id}").replace("/greeting", "/{name}")
                .replace("/ag2", "/{name}").replace("/agents/out", "/agents/{name}")
                .replace("/empty", "/{name}")
                .replace("/country", "/{key}").replace("/topic", "/{key}")
                .replace("/nope", "/{id}"))
               for r in MATRIX} | ELSEWHERE
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/v1/")
              and r.method != "HEAD"}
    assert routes - covered == set()


async def test_lists_show_only_visible_tickets(client: Client, store_of: TicketStore) -> None:
    world = await _world(client, store_of)
    pool = await inbound(store_of, address="whatsapp:+33600000003")
    for role, expected in (("outsider", {pool.ticket_id}),
                           ("agent", {world.ids["T"], world.ids["A"], pool.ticket_id}),
                           ("admin", {world.ids["T"], world.ids["A"], pool.ticket_id})):
        response = await client.get("/api/v1/tickets",
                                    headers={"Authorization": f"Bearer {world.tokens[role]}"})
        assert {t["id"] for t in (await response.json())["tickets"]} == expected, role


async def test_environment_agents_keep_working_the_pool(client: Client) -> None:
    """BRIDGE_AGENT_TOKENS agents without a record are agents of no group."""
    form_response = await post_signed(client, "/webhooks/twilio", _form())
    assert form_response.status == 200
    agent = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    listing = await (await client.get("/api/v1/tickets", headers=agent)).json()
    tid = listing["tickets"][0]["id"]
    me = await (await client.get("/api/v1/me", headers=agent)).json()
    assert (me["name"], me["role"], me["groups"]) == ("alice", "agent", [])
    response = await client.post(f"/api/v1/tickets/{tid}/take", headers=agent)
    assert (await response.json())["assignee"] == "alice"


def _form() -> dict[str, str]:
    from tests.factories import inbound_form
    return inbound_form("Bonjour")


async def _save_macro(client: Client, assignee: str) -> Any:
    return await client.put("/api/v1/macros/hand_over", headers=ADMIN, json={
        "locales": {"en": "Handing you over"}, "actions": {"assignee": assignee}})


async def test_a_macro_assigns_only_to_someone_a_ticket_may_be_assigned_to(
        client: Client, store_of: TicketStore) -> None:
    await _world(client, store_of)
    for nobody in ("nobody", "ro", "admin"):  # unknown, read-only, the bootstrap admin
        refused = await _save_macro(client, nobody)
        assert refused.status == 422, nobody
        assert (await refused.json())["error"]["code"] == "invalid_macro"
        checked = await client.post("/api/v1/macros/hand_over/validate", headers=ADMIN,
                                    json={"locales": {"en": "x"},
                                          "actions": {"assignee": nobody}})
        assert checked.status == 422
    missing = await client.get("/api/v1/macros/hand_over", headers=ADMIN)
    assert missing.status == 404  # nothing saved
    for fine in ("ag2", "", "@me"):
        assert (await _save_macro(client, fine)).status == 200, fine


async def test_a_macro_is_no_way_around_the_assignment_rules(
        client: Client, store_of: TicketStore) -> None:
    """An agent may not assign a ticket to someone else by PATCH, nor by a macro."""
    world = await _world(client, store_of)
    ticket = world.ids["T"]
    as_agent = {"Authorization": f"Bearer {world.tokens['agent']}"}
    as_manager = {"Authorization": f"Bearer {world.tokens['manager']}"}
    assert (await _save_macro(client, "ag2")).status == 200
    before, _ = await store_of.events(ticket)
    refused = await client.post(f"/api/v1/tickets/{ticket}/macros/hand_over",
                                headers=as_agent)
    assert refused.status == 403, await refused.text()
    after, _ = await store_of.events(ticket)
    assert len(after) == len(before)
    assert (await store_of.get_ticket(ticket)).assignee in (None, "")
    applied = await client.post(f"/api/v1/tickets/{ticket}/macros/hand_over",
                                headers=as_manager)
    assert applied.status == 202, await applied.text()
    assert (await store_of.get_ticket(ticket)).assignee == "ag2"


async def test_a_macro_naming_the_applying_agent_assigns_them(
        client: Client, store_of: TicketStore) -> None:
    world = await _world(client, store_of)
    ticket = world.ids["T"]
    assert (await _save_macro(client, "@me")).status == 200
    applied = await client.post(f"/api/v1/tickets/{ticket}/macros/hand_over",
                                headers={"Authorization": f"Bearer {world.tokens['agent']}"})
    assert applied.status == 202, await applied.text()
    assert (await store_of.get_ticket(ticket)).assignee == "ag"


async def test_a_macro_whose_assignee_has_left_is_refused_when_applied(
        client: Client, store_of: TicketStore) -> None:
    world = await _world(client, store_of)
    ticket = world.ids["T"]
    assert (await _save_macro(client, "ag2")).status == 200
    await client.patch(f"/api/v1/tickets/{world.ids['A']}", json={"assignee": None},
                       headers=ADMIN)  # what ag2 held, or they could not be deleted
    deleted = await client.delete("/api/v1/agents/ag2", headers=ADMIN)
    assert deleted.status == 204
    refused = await client.post(f"/api/v1/tickets/{ticket}/macros/hand_over",
                                headers={"Authorization": f"Bearer {world.tokens['manager']}"})
    assert refused.status == 422, await refused.text()
    assert (await refused.json())["error"]["code"] == "unknown_agent"
    assert (await store_of.get_ticket(ticket)).assignee in (None, "")


_DRAFT = {"locales": {"en": "{{ contact.name }} {{ ticket.fields }}"}}


async def test_previews_read_only_the_tickets_one_may_read(
        client: Client, store_of: TicketStore) -> None:
    world = await _world(client, store_of)
    ticket = world.ids["T"]  # group fr

    async def preview(role: str, body: dict[str, Any]) -> Any:
        return await client.post("/api/v1/macros/greeting/preview", json=body,
                                 headers={"Authorization": f"Bearer {world.tokens[role]}"})

    outsider = await preview("outsider", {"ticket_id": ticket})
    assert outsider.status == 403, await outsider.text()
    assert "Camille" not in await outsider.text()
    assert (await preview("agent", {"ticket_id": ticket})).status == 200
    assert (await preview("read_only", {"ticket_id": ticket})).status == 200


async def test_only_admins_render_drafts(client: Client, store_of: TicketStore) -> None:
    """A draft is a template of the sender's own: rendering one is editing's privilege."""
    world = await _world(client, store_of)
    for role in ("manager", "agent", "read_only", "outsider"):
        headers = {"Authorization": f"Bearer {world.tokens[role]}"}
        for path in ("/api/v1/macros/greeting/preview", "/api/v1/macros/greeting/validate",
                     "/api/v1/macros/new_one/preview"):
            refused = await client.post(path, json=_DRAFT, headers=headers)
            assert refused.status == 403, (role, path, await refused.text())
    drafted = await client.post("/api/v1/macros/greeting/preview", headers=ADMIN,
                                json={**_DRAFT, "ticket_id": world.ids["T"]})
    assert drafted.status == 200, await drafted.text()


async def test_the_workspace_previews_follow_the_same_rules(
        client: Client, store_of: TicketStore) -> None:
    from tests.workspace_support import sign_in
    world = await _world(client, store_of)
    ticket = world.ids["T"]
    csrf = await sign_in(client, world.tokens["outsider"])
    page = await client.get(f"/app/tickets/{ticket}/macro-preview?macro=greeting")
    assert page.status == 403 and "Camille" not in await page.text()
    editor = await client.post("/app/macros/greeting/preview", data={
        "csrf_token": csrf, "locale_en": "{{ contact.name }} DRAFT", "ticket_id": ticket})
    assert editor.status == 403 and "Camille" not in await editor.text()
    sample = await client.post("/app/macros/greeting/preview", data={
        "csrf_token": csrf, "locale_en": "{{ contact.name }} DRAFT"})
    assert sample.status == 200
    assert "DRAFT" not in await sample.text()  # the macro as saved, not the draft


async def test_a_read_only_refusal_names_the_role_not_an_empty_assignee(
        client: Client, store_of: TicketStore) -> None:
    world = await _world(client, store_of)
    refused = await client.patch(f"/api/v1/tickets/{world.ids['T']}", json={"status": "open"},
                                 headers={"Authorization": f"Bearer {world.tokens['read_only']}"})
    assert refused.status == 403
    message = (await refused.json())["error"]["message"]
    assert "read_only role" in message and "assigned to" not in message
    taken = await client.patch(f"/api/v1/tickets/{world.ids['A']}", json={"status": "open"},
                               headers={"Authorization": f"Bearer {world.tokens['agent']}"})
    assert "assigned to ag2" in (await taken.json())["error"]["message"]
