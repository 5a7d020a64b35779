"""People, groups, tokens and assignment rules through the API; bad input writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from bridge.store.tickets import TicketStore
from bridge.web.keys import store_key
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.factories import inbound

Client = TestClient[Any, Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _person(client: Client, **body: Any) -> str:
    response = await client.post("/api/v1/agents", json=body, headers=ADMIN)
    assert response.status == 201, await response.text()
    return str((await response.json())["token"])


async def _ticket(client: Client, group: str = "") -> str:
    store: TicketStore = client.app[store_key]
    tid = str((await inbound(store)).ticket_id)
    if group:
        await client.patch(f"/api/v1/tickets/{tid}", json={"group": group}, headers=ADMIN)
    return tid


@pytest.mark.parametrize("body", [
    {"name": "Awa Diop"}, {"name": "admin"}, {"name": "system"}, {"name": ""},
    {"name": "awa", "role": "owner"}, {"name": "awa", "groups": ["nope"]},
    {"name": "awa", "groups": "fr"}, {"name": "awa", "capacity": -1},
    {"name": "awa", "capacity": True}, {"name": "awa", "time_zone": "Mars/Olympus"},
    {"name": "awa", "time_zone": "../../etc/passwd"}, {"name": "awa", "locale": "French!"},
    {"name": "awa", "display_name": "x" * 101}, {"name": "awa", "available": "yes"},
    {"name": "awa", "token": "mine"},
    # Read-only people work no tickets: in the rotation, assignment gave them some.
    {"name": "awa", "role": "read_only", "available": True},
])
async def test_bad_people_are_422_and_nothing_is_written(client: Client, body: dict[str, Any],
                                                         sync_redis: redis.Redis) -> None:
    response = await client.post("/api/v1/agents", json=body, headers=ADMIN)
    assert response.status == 422, await response.text()
    assert sync_redis.dbsize() == 0


async def test_tokens_are_shown_once_replaced_and_removed(client: Client,
                                                          sync_redis: redis.Redis) -> None:
    await client.post("/api/v1/groups", json={"name": "fr"}, headers=ADMIN)
    token = await _person(client, name="awa", role="manager", groups=["fr"],
                          display_name="Awa Diop", locale="fr", time_zone="Africa/Dakar")
    me = await (await client.get("/api/v1/me", headers=bearer(token))).json()
    assert (me["name"], me["role"], me["groups"], me["display_name"]) == (
        "awa", "manager", ["fr"], "Awa Diop")
    assert "tickets.assign" in me["permissions"] and "people.manage" not in me["permissions"]
    assert token.encode() not in b"".join(
        v for k in sync_redis.scan_iter() if sync_redis.type(k) == b"string"
        for v in [sync_redis.get(k) or b""])
    rotated = await client.post("/api/v1/agents/awa/token", headers=ADMIN)
    new_token = (await rotated.json())["token"]
    assert (await client.get("/api/v1/me", headers=bearer(token))).status == 401
    assert (await client.get("/api/v1/me", headers=bearer(new_token))).status == 200
    assert (await client.delete("/api/v1/agents/awa", headers=ADMIN)).status == 204
    assert (await client.get("/api/v1/me", headers=bearer(new_token))).status == 401


async def test_a_record_gives_an_environment_agent_a_role_and_groups(client: Client) -> None:
    await client.post("/api/v1/groups", json={"name": "fr"}, headers=ADMIN)
    await _person(client, name="alice", role="read_only", groups=["fr"])
    me = await (await client.get("/api/v1/me", headers=bearer(AGENT_TOKEN))).json()
    assert (me["role"], me["groups"]) == ("read_only", ["fr"])
    tid = await _ticket(client)
    response = await client.post(f"/api/v1/tickets/{tid}/notes", json={"body": "x"},
                                 headers=bearer(AGENT_TOKEN))
    assert response.status == 403


async def test_assignment_rules(client: Client) -> None:
    for group in ("fr", "sn"):
        await client.post("/api/v1/groups", json={"name": group}, headers=ADMIN)
    manager = await _person(client, name="mgr", role="manager", groups=["fr"])
    agent = await _person(client, name="ag", groups=["fr"])
    await _person(client, name="other", groups=["sn"])
    tid = await _ticket(client, "fr")

    async def patch(token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = await client.patch(f"/api/v1/tickets/{tid}", json=body,
                                      headers=bearer(token))
        return response.status, await response.json()

    assert (await patch(manager, {"assignee": "other"}))[0] == 422  # not a member of fr
    assert (await patch(manager, {"group": "sn"}))[0] == 403  # not the manager's group
    assert (await patch(ADMIN_TOKEN, {"group": "nope"}))[0] == 422
    status, body = await patch(manager, {"assignee": "ag"})
    assert (status, body["assignee"], body["group"]) == (200, "ag", "fr")
    assert (await patch(agent, {"assignee": None}))[1]["assignee"] is None  # release
    assert (await patch(agent, {"group": None}))[0] == 403
    assert (await patch(ADMIN_TOKEN, {"group": ""}))[0] == 422  # null is the pool
    status, body = await patch(ADMIN_TOKEN, {"group": "sn", "assignee": "other"})
    assert (status, body["group"], body["assignee"]) == (200, "sn", "other")
    # Now in sn, the ticket is out of the fr agent's sight.
    response = await client.get(f"/api/v1/tickets/{tid}", headers=bearer(agent))
    assert response.status == 403
    events = (await (await client.get(f"/api/v1/tickets/{tid}/events",
                                      headers=ADMIN)).json())["events"]
    assert events[0]["data"] == {"group": "sn", "assignee": "other"}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/v1/groups", {"name": "Bad Name"}),
    ("POST", "/api/v1/groups", {"name": "ok", "description": 5}),
    ("PUT", "/api/v1/fields/country", {"type": "colour"}),
    ("PUT", "/api/v1/fields/country", {"type": "text", "groups": ["nope"]}),
    ("PUT", "/api/v1/me/availability", {"available": "yes"}),
])
async def test_other_bad_input_is_422_and_writes_nothing(
        client: Client, sync_redis: redis.Redis, method: str, path: str,
        body: dict[str, Any]) -> None:
    response = await client.request(method, path, json=body, headers=ADMIN)
    assert response.status == 422, await response.text()
    assert sync_redis.dbsize() == 0


async def test_a_group_with_members_is_not_removed(client: Client) -> None:
    await client.post("/api/v1/groups", json={"name": "fr"}, headers=ADMIN)
    await _person(client, name="awa", groups=["fr"])
    assert (await client.delete("/api/v1/groups/fr", headers=ADMIN)).status == 409
    assert (await client.post("/api/v1/groups", json={"name": "fr"},
                              headers=ADMIN)).status == 409
    listed = await (await client.get("/api/v1/groups", headers=ADMIN)).json()
    assert listed["groups"] == [{"name": "fr", "description": "", "members": ["awa"]}]


async def test_a_group_with_unsolved_tickets_is_not_removed(client: Client) -> None:
    """Its tickets would stay in a group nobody can join: readable by admins only."""
    await client.post("/api/v1/groups", json={"name": "es"}, headers=ADMIN)
    tid = await _ticket(client, group="es")
    refused = await client.delete("/api/v1/groups/es", headers=ADMIN)
    assert refused.status == 409
    error = (await refused.json())["error"]
    assert error["code"] == "group_has_tickets" and tid in error["message"]
    await client.patch(f"/api/v1/tickets/{tid}", json={"status": "closed"}, headers=ADMIN)
    # A closed ticket is history: it keeps its group's name.
    assert (await client.delete("/api/v1/groups/es", headers=ADMIN)).status == 204


@pytest.mark.parametrize(("change", "code"), [
    ({"groups": ["sn"]}, 409),  # leaves the group of a ticket they hold
    ({"role": "read_only"}, 409),  # read-only people hold no ticket
    ({"groups": ["fr", "sn"]}, 200),
    ({"role": "manager"}, 200),
    ({"display_name": "Awa D."}, 200),
])
async def test_a_change_that_would_strand_held_tickets_is_refused(
        client: Client, change: dict[str, Any], code: int) -> None:
    for group in ("fr", "sn"):
        await client.post("/api/v1/groups", json={"name": group}, headers=ADMIN)
    await _person(client, name="awa", groups=["fr"])
    tid = await _ticket(client, group="fr")
    assigned = await client.patch(f"/api/v1/tickets/{tid}", json={"assignee": "awa"},
                                  headers=ADMIN)
    assert assigned.status == 200, await assigned.text()
    answer = await client.patch("/api/v1/agents/awa", json=change, headers=ADMIN)
    assert answer.status == code, await answer.text()
    person = await (await client.get("/api/v1/agents/awa", headers=ADMIN)).json()
    if code == 409:
        error = (await answer.json())["error"]
        assert error["code"] == "agent_holds_tickets" and tid in error["message"]
        assert (person["role"], person["groups"]) == ("agent", ["fr"])  # nothing written
    else:
        assert all(person[k] == v for k, v in change.items())


async def test_a_person_holding_unsolved_tickets_is_not_deleted(client: Client) -> None:
    await _person(client, name="awa")
    tid = await _ticket(client)
    await client.patch(f"/api/v1/tickets/{tid}", json={"assignee": "awa"}, headers=ADMIN)
    refused = await client.delete("/api/v1/agents/awa", headers=ADMIN)
    assert refused.status == 409
    assert (await refused.json())["error"]["code"] == "agent_holds_tickets"
    await client.patch(f"/api/v1/tickets/{tid}", json={"assignee": None}, headers=ADMIN)
    assert (await client.delete("/api/v1/agents/awa", headers=ADMIN)).status == 204


async def test_a_person_made_read_only_leaves_the_rotation(client: Client) -> None:
    await client.post("/api/v1/groups", json={"name": "fr"}, headers=ADMIN)
    await _person(client, name="awa", groups=["fr"], available=True)
    made = await client.patch("/api/v1/agents/awa", json={"role": "read_only"}, headers=ADMIN)
    assert made.status == 200 and (await made.json())["available"] is False
    again = await client.patch("/api/v1/agents/awa", json={"available": True}, headers=ADMIN)
    assert again.status == 422 and "read_only" in await again.text()


async def test_a_change_keeps_an_unset_display_name_unset(client: Client,
                                                          sync_redis: redis.Redis) -> None:
    await _person(client, name="awa")
    await client.patch("/api/v1/agents/awa", json={"capacity": 3}, headers=ADMIN)
    from bridge.store.teams import person_key
    assert sync_redis.hget(person_key("awa"), "display_name") in (b"", None)


async def test_read_only_people_saved_available_earlier_leave_the_rotation(
        client: Client, sync_redis: redis.Redis) -> None:
    """Before read-only people were refused available, auto-assignment gave them tickets;
    the relay retires such records when it starts."""
    from bridge.core.teams import Person, Role
    from bridge.store.teams import TeamStore, rotation_key
    from bridge.web.keys import redis_key
    teams = TeamStore(client.app[redis_key])
    await teams.save_person(Person(name="ro", role=Role.READ_ONLY, groups=frozenset({"fr"}),
                                   available=True))
    sync_redis.zadd(rotation_key("fr"), {"ro": 0})  # as an earlier version left it
    assert await teams.retire_read_only() == ["ro"]
    assert not (await teams.get_person("ro")).available
    assert sync_redis.zscore(rotation_key("fr"), "ro") is None
    assert await teams.retire_read_only() == []
