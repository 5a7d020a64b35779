"""Security review, small findings: bearer header bytes, /metrics token, start-up checks of
tokens, assignee names, headers of JSON answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from config.settings import Secret, Settings, SettingsError
from tests.conftest import AGENT_TOKEN, METRICS_TOKEN, make_settings
from tests.factories import inbound_form, post_signed

Client = TestClient[Any, Any]
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
LONG = "x" * 32


async def raw_request(client: Client, path: str, authorization: bytes) -> tuple[int, bytes,
                                                                                 bytes]:
    """Send header bytes as they are (no client library re-encodes them): status, headers,
    body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                 b"Authorization: " + authorization + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head, body


@pytest.mark.parametrize("path", ["/api/v1/tickets", "/metrics"])
@pytest.mark.parametrize("token", [b"Bearer \xff\xfe\xfd", b"Bearer ok\xc3", b"\xffearer x"])
async def test_a_bearer_token_that_is_not_utf8_is_401(client: Client, path: str,
                                                      token: bytes) -> None:
    status, _, body = await raw_request(client, path, token)
    assert status == 401
    # The JSON error of the middleware: the request reached the application.
    assert json.loads(body)["error"]["code"] == "unauthorized"


async def test_metrics_needs_its_token_when_one_is_set(client: Client) -> None:
    assert (await client.get("/metrics")).status == 401
    for wrong in ("Bearer nope", f"Bearer {AGENT_TOKEN}", f"Basic {METRICS_TOKEN}"):
        answer = await client.get("/metrics", headers={"Authorization": wrong})
        assert answer.status == 401, wrong
        assert (await answer.json())["error"]["code"] == "unauthorized"
    good = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert good.status == 200
    assert "bridge_http_requests_total" in await good.text()


async def test_metrics_without_a_token_is_open_in_development_only(
        aiohttp_client: Any, redis_url: str, sync_redis: redis.Redis) -> None:
    production: Client = await aiohttp_client(create_app(
        make_settings(redis_url, metrics_token=Secret(""))))
    closed = await production.get("/metrics")
    assert closed.status == 403
    assert "BRIDGE_METRICS_TOKEN" in (await closed.json())["error"]["message"]
    development: Client = await aiohttp_client(create_app(
        make_settings(redis_url, metrics_token=Secret(""), development=True)))
    assert (await development.get("/metrics")).status == 200


def production_env(**values: str) -> dict[str, str]:
    return {"BRIDGE_ENV": "production", **values}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BRIDGE_ADMIN_TOKEN": "a" * 31}, "BRIDGE_ADMIN_TOKEN"),
        ({"BRIDGE_AGENT_TOKENS": f"alice:{LONG},bob:{'b' * 20}"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_METRICS_TOKEN": "m" * 16}, "BRIDGE_METRICS_TOKEN"),
        ({"BRIDGE_AGENT_TOKENS": f"alice:{LONG},bob:{LONG}"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_ADMIN_TOKEN": LONG, "BRIDGE_METRICS_TOKEN": LONG}, "BRIDGE_METRICS_TOKEN"),
        ({"BRIDGE_AGENT_TOKENS": f"alice:{LONG}", "BRIDGE_METRICS_TOKEN": LONG},
         "BRIDGE_METRICS_TOKEN"),
        ({"BRIDGE_AGENT_TOKENS": f"system:{LONG}"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_AGENT_TOKENS": f"admin:{LONG}"}, "BRIDGE_AGENT_TOKENS"),
        ({"BRIDGE_AGENT_TOKENS": f"Customer:{LONG}"}, "BRIDGE_AGENT_TOKENS"),
    ],
    ids=["short-admin", "short-agent", "short-metrics", "agents-share", "admin-is-metrics",
         "agent-is-metrics", "agent-system", "agent-admin", "agent-customer"],
)
def test_production_refuses_weak_or_ambiguous_tokens(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(production_env(**env))
    # Production is the default: the same values without BRIDGE_ENV are refused too.
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_development_accepts_short_tokens_but_not_ambiguous_ones() -> None:
    s = Settings.from_env({"BRIDGE_ENV": "development", "BRIDGE_ADMIN_TOKEN": "adm_short",
                           "BRIDGE_AGENT_TOKENS": "alice:agt_short1",
                           "BRIDGE_METRICS_TOKEN": "met_short"})
    assert s.development and str(s.metrics_token) == "met_short"
    # Two people on one token, or an agent named like a built-in author, are never useful.
    for agents in ("alice:same-token,bob:same-token", "system:agt_short1"):
        with pytest.raises(SettingsError, match="BRIDGE_AGENT_TOKENS"):
            Settings.from_env({"BRIDGE_ENV": "development", "BRIDGE_AGENT_TOKENS": agents})


def test_production_accepts_long_distinct_tokens() -> None:
    s = Settings.from_env(production_env(
        BRIDGE_ADMIN_TOKEN="A" * 32, BRIDGE_AGENT_TOKENS=f"alice:{'B' * 40},bob:{'C' * 32}",
        BRIDGE_METRICS_TOKEN="D" * 32))
    assert not s.development
    assert set(s.agent_tokens) == {"alice", "bob"}


def test_bridge_env_must_be_known() -> None:
    with pytest.raises(SettingsError, match="BRIDGE_ENV"):
        Settings.from_env({"BRIDGE_ENV": "staging"})


async def _ticket(client: Client) -> dict[str, Any]:
    assert (await post_signed(client, "/webhooks/twilio", inbound_form("Bonjour"))).status == 200
    listing = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    return dict(listing["tickets"][0])


@pytest.mark.parametrize("assignee", ["mallory", "admin", "system", "", "ALICE"])
async def test_assignee_must_be_a_known_agent(client: Client, sync_redis: redis.Redis,
                                              assignee: str) -> None:
    ticket = await _ticket(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    before = sorted(sync_redis.keys())
    dump = {k: sync_redis.dump(k) for k in before}
    answer = await client.patch(url, json={"assignee": assignee, "status": "pending"},
                                headers=AGENT)
    assert answer.status == 422
    error = (await answer.json())["error"]
    assert error["code"] == "unknown_agent" and "assignee" in error["message"]
    # Nothing written: not the assignee, not the status that came with it.
    assert sorted(sync_redis.keys()) == before
    assert {k: sync_redis.dump(k) for k in before} == dump
    after = await (await client.get(url, headers=AGENT)).json()
    assert {**after, "age_s": 0} == {**ticket, "age_s": 0}


async def test_assignee_known_agent_or_null(client: Client) -> None:
    ticket = await _ticket(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    assigned = await client.patch(url, json={"assignee": "alice"}, headers=AGENT)
    assert assigned.status == 200 and (await assigned.json())["assignee"] == "alice"
    cleared = await client.patch(url, json={"assignee": None}, headers=AGENT)
    assert cleared.status == 200 and (await cleared.json())["assignee"] is None


async def test_json_answers_are_not_cached_or_sniffed(client: Client) -> None:
    answers = {
        "ok": await client.get("/api/v1/tickets", headers=AGENT),
        "401": await client.get("/api/v1/tickets"),
        "404 handler": await client.get("/api/v1/tickets/999", headers=AGENT),
        "404 no route": await client.get("/nowhere"),
        "405": await client.delete("/api/v1/tickets", headers=AGENT),
        "422": await client.get("/api/v1/tickets?limit=0", headers=AGENT),
        "403 webhook": await client.post("/webhooks/twilio", data={"MessageSid": "SMx"}),
        "openapi": await client.get("/api/openapi.json"),
        "healthz": await client.get("/healthz"),
        "readyz": await client.get("/readyz"),
    }
    for name, answer in answers.items():
        assert answer.content_type == "application/json", name
        assert answer.headers.get("Cache-Control") == "no-store", name
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", name
