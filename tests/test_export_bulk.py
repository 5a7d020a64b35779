"""Bulk export: the paged API and `bridge export`, `bridge webhooks` on the command line."""

from __future__ import annotations

import csv
import io
import json
import secrets
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from bridge.cli import main
from bridge.core.tickets import EventType
from bridge.store.export_endpoints import EndpointStore
from bridge.store.tickets import TicketStore
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.factories import ids, inbound, now_ms
from tests.faults.workers_support import in_store

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY_MS = 86_400_000


async def seed(store: TicketStore, count: int = 7) -> list[str]:
    """`count` tickets of a day ago, then two of now with a note each."""
    old = now_ms() - 3 * DAY_MS
    tickets = [ids(await inbound(store, f"ancien {n}", address=f"whatsapp:+3361111110{n}",
                                 at_ms=old)) for n in range(count)]
    for n in range(2):
        tid = ids(await inbound(store, f"=SUM(A1) {n}", address=f"whatsapp:+3362222220{n}"))
        await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                  event=(EventType.NOTE, "note interne", {}))
        tickets.append(tid)
    return tickets


async def pages(client: Client, path: str, key: str, **query: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(100):
        response = await client.get(path, headers=ADMIN, params={**query, "cursor": cursor}
                                    if cursor else query)
        assert response.status == 200, await response.text()
        body = await response.json()
        rows += body[key]
        if body["next_cursor"] is None:
            return rows
        cursor = body["next_cursor"]
    raise AssertionError("the cursor never ended")


async def test_tickets_and_events_page_through_everything(client: Client,
                                                          store: TicketStore) -> None:
    tickets = await seed(store)
    rows = await pages(client, "/api/v1/export/tickets", "tickets", limit="2")
    assert [r["id"] for r in rows] == tickets
    recent = await pages(client, "/api/v1/export/tickets", "tickets", limit="1",
                         since="2000-01-01T00:00:00Z")
    assert len(recent) == len(tickets)
    since = await pages(client, "/api/v1/export/tickets", "tickets", limit="3",
                        since=_iso(now_ms() - DAY_MS))
    assert [r["id"] for r in since] == tickets[-2:]
    events = await pages(client, "/api/v1/export/events", "events", limit="3")
    assert len(events) == len(tickets) + 2  # a message each, two notes
    per_ticket = [e["ticket_id"] for e in events]
    assert per_ticket == sorted(per_ticket, key=int)
    anonymous = await pages(client, "/api/v1/export/events", "events", limit="4",
                            anonymize="true", since=_iso(now_ms() - DAY_MS))
    assert len(anonymous) == 4 and all(e["body"] is None for e in anonymous)


def _iso(ms: int) -> str:
    from bridge.core.export_events import iso

    return iso(ms)


async def test_csv_and_ndjson_pages(client: Client, store: TicketStore) -> None:
    await seed(store, count=1)
    response = await client.get("/api/v1/export/events", headers=ADMIN,
                                params={"format": "csv", "limit": "2"})
    assert response.status == 200 and response.content_type == "text/csv"
    table = list(csv.reader(io.StringIO(await response.text())))
    assert table[0][:3] == ["ticket_id", "id", "type"] and len(table) == 3
    cursor = response.headers["X-Next-Cursor"]
    response = await client.get("/api/v1/export/events", headers=ADMIN,
                                params={"format": "ndjson", "limit": "10", "cursor": cursor})
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert len(lines) == 3 and "X-Next-Cursor" not in response.headers  # 5 events in all
    formula = [r for r in table[1:] if "SUM" in r[5]] + [
        r for r in csv.reader(io.StringIO(await (await client.get(
            "/api/v1/export/events", headers=ADMIN, params={"format": "csv"})).text()))
        if "SUM" in r[5]]
    assert formula and all(r[5].startswith("'=") for r in formula)


@pytest.mark.parametrize("query", [
    {"since": "hier"}, {"limit": "0"}, {"limit": "5000"}, {"cursor": "abc"},
    {"format": "xml"}, {"anonymize": "yes"},
])
async def test_bad_export_queries(client: Client, query: dict[str, str]) -> None:
    path = "/api/v1/export/events"
    if "anonymize" not in query:
        assert (await client.get("/api/v1/export/tickets", headers=ADMIN,
                                 params=query)).status == 422
    assert (await client.get(path, headers=ADMIN, params=query)).status == 422


async def test_bulk_export_is_for_admins(client: Client) -> None:
    agent = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    for path in ("/api/v1/export/tickets", "/api/v1/export/events"):
        assert (await client.get(path, headers=agent)).status == 403


def test_bridge_export_and_webhooks_on_the_command_line(redis_url: str,
                                                        sync_redis: redis.Redis) -> None:
    tickets = in_store(redis_url, seed)
    runner = CliRunner()
    env = {"BRIDGE_ENV": "production"}
    done = runner.invoke(main, ["export", "--format", "csv", "--redis-url", redis_url], env=env)
    assert done.exit_code == 0, done.output
    table = list(csv.reader(io.StringIO(done.stdout)))
    assert [r[0] for r in table[1:]] == tickets
    done = runner.invoke(main, ["export", "--kind", "events", "--since", "yesterday",
                                "--redis-url", redis_url], env=env)
    assert done.exit_code == 2 and "ISO 8601" in done.output
    refused = runner.invoke(main, ["webhooks", "add", "http://127.0.0.1/x",
                                   "--redis-url", redis_url], env=env)
    assert refused.exit_code == 2
    for description in ("x" * 501, "a\x00b"):  # the API's rule
        refused = runner.invoke(main, ["webhooks", "add", "https://hooks.example.com/x",
                                       "--description", description,
                                       "--redis-url", redis_url], env=env)
        assert refused.exit_code == 2 and "description" in refused.output
    added = runner.invoke(main, ["webhooks", "add", "https://hooks.example.com/x", "--event",
                                 "ticket.created", "--redis-url", redis_url], env=env)
    assert added.exit_code == 0, added.output
    endpoint_id = added.stdout.split()[0]
    assert "whsec_" in added.stdout

    async def endpoints(store: TicketStore) -> list[str]:
        return [e.id for e in await EndpointStore(store.redis).all()]

    assert in_store(redis_url, endpoints) == [endpoint_id]
    for args in (["list"], ["health", endpoint_id], ["failed", endpoint_id],
                 ["update", endpoint_id, "--disable"], ["rotate-secret", endpoint_id],
                 ["replay", endpoint_id, "--since", "2026-01-01T00:00:00Z"],
                 # before 1970: everything, as the API (it crashed on the stream id)
                 ["replay", endpoint_id, "--since", "1960-01-01T00:00:00Z"]):
        done = runner.invoke(main, ["webhooks", *args, "--redis-url", redis_url], env=env)
        assert done.exit_code == 0, (args, done.output)
    assert "disabled" in runner.invoke(main, ["webhooks", "list", "--redis-url", redis_url],
                                       env=env).stdout
    missing = runner.invoke(main, ["webhooks", "replay", endpoint_id, "--webhook-id", "evt_x",
                                   "--redis-url", redis_url], env=env)
    assert missing.exit_code == 1
    done = runner.invoke(main, ["webhooks", "remove", endpoint_id, "--redis-url", redis_url],
                         env=env)
    assert done.exit_code == 0 and in_store(redis_url, endpoints) == []


@pytest.mark.parametrize("development", [True, False])
def test_the_command_line_allows_what_the_running_bridge_allows(
        redis_url: str, tmp_path: Any, development: bool) -> None:
    """Without a Redis of its own the command acts on the `bridge run` of run.json: an
    http:// endpoint is accepted when that bridge runs in development (as `make run`), as
    its API would, and refused otherwise."""
    from bridge.devrun import write_private
    write_private(tmp_path / "run.json",
                  json.dumps({"redis_url": redis_url, "development": development}))
    env = {"BRIDGE_DATA_DIR": str(tmp_path), "REDIS_URL": None, "BRIDGE_ENV": None}
    url = f"http://hooks.example.com/{secrets.token_hex(4)}"
    done = CliRunner().invoke(main, ["webhooks", "add", url], env=env)
    assert done.exit_code == (0 if development else 2), done.output
    stored = in_store(redis_url, lambda store: EndpointStore(store.redis).all())
    assert (url in [e.url for e in stored]) is development


@pytest.mark.parametrize("allow_private", [True, False])
def test_the_command_line_takes_a_local_receiver_when_the_running_bridge_does(
        redis_url: str, tmp_path: Any, allow_private: bool) -> None:
    """BRIDGE_EXPORT_ALLOW_PRIVATE set for `make run` holds for the commands acting on it,
    even from a shell without it; the metadata service stays refused."""
    from bridge.devrun import write_private
    write_private(tmp_path / "run.json", json.dumps({
        "redis_url": redis_url, "development": True, "export_allow_private": allow_private}))
    env = {"BRIDGE_DATA_DIR": str(tmp_path), "REDIS_URL": None, "BRIDGE_ENV": None,
           "BRIDGE_EXPORT_ALLOW_PRIVATE": None}
    done = CliRunner().invoke(main, ["webhooks", "add", "http://127.0.0.1:9911/cli"], env=env)
    assert done.exit_code == (0 if allow_private else 2), done.output
    metadata = CliRunner().invoke(main, ["webhooks", "add", "http://169.254.169.254/x"],
                                  env=env)
    assert metadata.exit_code == 2 and "metadata" in metadata.output


def test_the_command_line_sets_what_the_api_sets(redis_url: str, tmp_path: Any) -> None:
    """Redirects and the description, on add and on update, as POST and PATCH take them;
    a bad description changes nothing."""
    from bridge.devrun import write_private
    write_private(tmp_path / "run.json", json.dumps({"redis_url": redis_url,
                                                     "development": True}))
    env = {"BRIDGE_DATA_DIR": str(tmp_path), "REDIS_URL": None, "BRIDGE_ENV": None}
    url = f"https://hooks.example.com/{secrets.token_hex(4)}"
    added = CliRunner().invoke(main, ["webhooks", "add", url, "--follow-redirects"], env=env)
    assert added.exit_code == 0, added.output
    endpoint_id = added.output.splitlines()[0]

    def stored() -> Any:
        return in_store(redis_url, lambda store: EndpointStore(store.redis).get(endpoint_id))

    assert stored().follow_redirects is True
    done = CliRunner().invoke(main, ["webhooks", "update", endpoint_id, "--description",
                                     "CRM", "--no-follow-redirects"], env=env)
    assert done.exit_code == 0, done.output
    assert (stored().description, stored().follow_redirects) == ("CRM", False)
    bad = CliRunner().invoke(main, ["webhooks", "update", endpoint_id, "--description",
                                    "x" * 5000], env=env)
    assert bad.exit_code == 2 and stored().description == "CRM"
