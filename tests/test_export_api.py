"""The webhook endpoints API: admin only, validated, nothing written on bad input."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from bridge.store.export_endpoints import EndpointStore
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
BASE = "/api/v1/webhook-endpoints"
GOOD = {"url": "https://hooks.example.com/bridge", "events": ["ticket.created", "note.added"],
        "description": "BI dashboard"}


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post(BASE, headers=ADMIN, json={**GOOD, **fields})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_an_admin_manages_endpoints(client: Client) -> None:
    created = await create(client)
    assert created["id"].startswith("ep_") and created["secret"].startswith("whsec_")
    assert created["events"] == GOOD["events"] and created["enabled"] is True
    listed = await (await client.get(BASE, headers=ADMIN)).json()
    assert [e["id"] for e in listed["endpoints"]] == [created["id"]]
    assert "secret" not in listed["endpoints"][0]  # shown once, at creation
    one = await (await client.get(f"{BASE}/{created['id']}", headers=ADMIN)).json()
    assert "secret" not in one and one["health"]["state"] == "healthy"
    patched = await client.patch(f"{BASE}/{created['id']}", headers=ADMIN,
                                 json={"enabled": False, "events": ["*"],
                                       "url": "https://other.example.com/x"})
    assert patched.status == 200
    body = await patched.json()
    assert (body["enabled"], body["events"], body["url"]) == (
        False, ["*"], "https://other.example.com/x")
    health = await (await client.get(f"{BASE}/{created['id']}/health", headers=ADMIN)).json()
    assert health["state"] == "disabled"
    rotated = await client.post(f"{BASE}/{created['id']}/rotate-secret", headers=ADMIN)
    assert rotated.status == 200
    assert (await rotated.json())["secret"] != created["secret"]
    assert (await client.delete(f"{BASE}/{created['id']}", headers=ADMIN)).status == 204
    assert (await client.get(f"{BASE}/{created['id']}", headers=ADMIN)).status == 404


@pytest.mark.parametrize(("method", "path"), [
    ("POST", BASE), ("GET", BASE), ("GET", f"{BASE}/ep_0123456789abcdef"),
    ("PATCH", f"{BASE}/ep_0123456789abcdef"), ("DELETE", f"{BASE}/ep_0123456789abcdef"),
    ("POST", f"{BASE}/ep_0123456789abcdef/rotate-secret"),
    ("POST", f"{BASE}/ep_0123456789abcdef/replay"),
    ("GET", f"{BASE}/ep_0123456789abcdef/failed"),
])
async def test_agents_are_refused(client: Client, method: str, path: str) -> None:
    response = await client.request(method, path, headers=AGENT, json=GOOD)
    assert response.status == 403
    assert (await client.request(method, path, json=GOOD)).status == 401


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"url": "http://hooks.example.com/x", "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://localhost/x", "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://127.0.0.1/x", "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://169.254.169.254/latest", "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://[fd00:ec2::254]/x", "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://10.0.0.1/x", "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://u:p@hooks.example.com/x", "events": ["*"]}, 422, "invalid_url"),
    ({"url": 7, "events": ["*"]}, 422, "invalid_url"),
    ({"url": "https://hooks.example.com/x", "events": []}, 422, "invalid_events"),
    ({"url": "https://hooks.example.com/x", "events": ["ticket.boom"]}, 422, "invalid_events"),
    ({"url": "https://hooks.example.com/x", "events": "*"}, 422, "invalid_events"),
    ({"url": "https://hooks.example.com/x"}, 422, "invalid"),
    ({"events": ["*"]}, 422, "invalid"),
    ({**GOOD, "anonymize": "yes"}, 422, "invalid"),
    ({**GOOD, "description": "x" * 501}, 422, "invalid"),
    ({**GOOD, "secret": "whsec_mine"}, 422, "invalid"),
])
async def test_bad_endpoints_are_refused_and_nothing_is_written(
        client: Client, aredis: redis.asyncio.Redis, body: dict[str, Any], status: int,
        code: str) -> None:
    response = await client.post(BASE, headers=ADMIN, json=body)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    assert await EndpointStore(aredis).all() == []
    assert await EndpointStore(aredis).version() == 0


async def test_malformed_bodies(client: Client, aredis: redis.asyncio.Redis) -> None:
    response = await client.post(BASE, headers={**ADMIN, "Content-Type": "application/json"},
                                 data=b"{nope")
    assert response.status == 400
    response = await client.post(BASE, headers=ADMIN, data=b"url=x")
    assert response.status == 415
    assert await EndpointStore(aredis).all() == []


async def test_bad_patches_change_nothing(client: Client, aredis: redis.asyncio.Redis) -> None:
    created = await create(client)
    for body in ({"url": "http://x.example.com/"}, {"enabled": "no"}, {"events": []},
                 {"id": "ep_x"}):
        response = await client.patch(f"{BASE}/{created['id']}", headers=ADMIN, json=body)
        assert response.status == 422, body
    stored = await EndpointStore(aredis).get(created["id"])
    assert (stored.url, stored.enabled, stored.events) == (
        GOOD["url"], True, tuple(GOOD["events"]))


@pytest.mark.parametrize(("body", "status"), [
    ({}, 422), ({"webhook_id": "evt_x", "since": "2026-01-01T00:00:00Z"}, 422),
    ({"since": "yesterday"}, 422), ({"since": 5}, 422), ({"webhook_id": ""}, 422),
    ({"webhook_id": "evt_unknown"}, 404), ({"since": "2026-01-01T00:00:00Z"}, 202),
])
async def test_replay_requests(client: Client, body: dict[str, Any], status: int) -> None:
    created = await create(client)
    response = await client.post(f"{BASE}/{created['id']}/replay", headers=ADMIN, json=body)
    assert response.status == status


async def test_unknown_endpoints_are_404(client: Client) -> None:
    for path in (f"{BASE}/ep_0123456789abcdef", f"{BASE}/nonsense",
                 f"{BASE}/ep_0123456789abcdef/health"):
        assert (await client.get(path, headers=ADMIN)).status == 404
    assert (await client.get(f"{BASE}/{(await create(client))['id']}/failed?limit=0",
                             headers=ADMIN)).status == 422
