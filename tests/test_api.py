"""The agent API through the real app, a real Redis and signed inbound webhooks."""

from __future__ import annotations

import logging
from typing import Any

import jsonschema
import pytest
import redis
from aiohttp.test_utils import TestClient
from rq import Queue
from rq.serializers import JSONSerializer

from bridge.jobs import QUEUE_OUTBOUND, SEND_OUTBOUND
from bridge.store import keys
from bridge.web.openapi import DOCUMENT
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, METRICS_TOKEN
from tests.factories import inbound_form, post_signed

Client = TestClient[Any, Any]
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def schema(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}


async def inbound(client: Client, body: str = "Bonjour",
                  sender: str = "whatsapp:+33612345678") -> dict[str, Any]:
    """Post a signed message; return the contact's newest ticket as the API shows it."""
    assert (await post_signed(client, "/webhooks/twilio", inbound_form(body, sender=sender))
            ).status == 200
    listing = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    mine = [t for t in listing["tickets"] if t["contact"]["address"] == sender]
    return dict(mine[0])


async def test_requests_without_a_known_token_are_401(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        response = await client.get("/api/v1/tickets", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"


async def test_ticket_shape_matches_the_openapi_document(client: Client) -> None:
    ticket = await inbound(client)
    jsonschema.validate(ticket, schema("Ticket"))
    assert ticket["status"] == "new"
    assert ticket["aging"] == "ok"
    assert ticket["session"] == {"state": "active", "ended_reason": None}
    assert ticket["contact"]["name"] == "Camille"
    page = await (await client.get(f"/api/v1/tickets/{ticket['id']}/events",
                                   headers=AGENT)).json()
    jsonschema.validate(page, schema("EventPage"))
    assert page["events"][0]["type"] == "customer_message"


async def test_unknown_ticket_is_404_json(client: Client) -> None:
    for path in ("/api/v1/tickets/999", "/api/v1/tickets/999/events"):
        response = await client.get(path, headers=AGENT)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_list_filters_and_pages(client: Client) -> None:
    for n in range(7):
        await inbound(client, f"hi {n}", sender=f"whatsapp:+3361234560{n}")
    first = await inbound(client, "again", sender="whatsapp:+33612345600")
    await client.patch(f"/api/v1/tickets/{first['id']}", json={"status": "pending",
                                                              "assignee": "alice"},
                       headers=AGENT)
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/tickets?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=AGENT)).json()
        seen += [t["id"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and len(set(seen)) == 7
    assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)
    pending = await (await client.get("/api/v1/tickets?status=pending", headers=AGENT)).json()
    assert [t["id"] for t in pending["tickets"]] == [first["id"]]
    mine = await (await client.get("/api/v1/tickets?assignee=alice", headers=AGENT)).json()
    assert [t["id"] for t in mine["tickets"]] == [first["id"]]
    by_contact = await (await client.get(
        f"/api/v1/tickets?contact={first['contact']['id']}", headers=AGENT)).json()
    assert [t["id"] for t in by_contact["tickets"]] == [first["id"]]
    for bad in ("status=bogus", "limit=0", "limit=1000", "cursor=abc", "channel=sms"):
        response = await client.get(f"/api/v1/tickets?{bad}", headers=AGENT)
        assert response.status == 422, bad
    on_whatsapp = await client.get("/api/v1/tickets?channel=whatsapp", headers=AGENT)
    assert len((await on_whatsapp.json())["tickets"]) == 7
    on_widget = await client.get("/api/v1/tickets?channel=widget", headers=AGENT)
    assert (await on_widget.json())["tickets"] == []


async def test_status_changes_follow_the_ticket_model(client: Client) -> None:
    ticket = await inbound(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    response = await client.patch(url, json={"status": "pending", "tags": ["VIP", "vip"]},
                                  headers=AGENT)
    body = await response.json()
    assert response.status == 200 and body["status"] == "pending" and body["tags"] == ["vip"]
    back_to_new = await client.patch(url, json={"status": "new"}, headers=AGENT)
    assert back_to_new.status == 409
    assert (await back_to_new.json())["error"]["code"] == "invalid_transition"
    assert (await client.patch(url, json={"status": "closed"}, headers=AGENT)).status == 200
    reopen = await client.patch(url, json={"status": "open"}, headers=AGENT)
    assert reopen.status == 409
    assert (await reopen.json())["error"]["code"] == "ticket_closed"
    events = await (await client.get(f"{url}/events", headers=AGENT)).json()
    changes = [e["data"] for e in events["events"] if e["type"] == "status_changed"]
    assert {"from": "pending", "to": "closed"} in changes


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"status": "bogus"}, 422, "invalid"),
        ({"colour": "red"}, 422, "invalid"),
        ({"tags": "vip"}, 422, "invalid"),
        ({"tags": ["has space"]}, 422, "invalid_tag"),
        ({"assignee": 42}, 422, "invalid"),
        ({}, 422, "invalid"),  # nothing to change (the document says minProperties 1)
    ],
)
async def test_patch_rejects_bad_fields_without_writing(
    client: Client, payload: dict[str, Any], status: int, code: str
) -> None:
    ticket = await inbound(client)
    response = await client.patch(f"/api/v1/tickets/{ticket['id']}", json=payload,
                                  headers=AGENT)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    after = await (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=AGENT)).json()
    assert after["version"] == ticket["version"]


async def test_malformed_json_and_wrong_content_type(client: Client) -> None:
    ticket = await inbound(client)
    url = f"/api/v1/tickets/{ticket['id']}/notes"
    bad_json = await client.post(url, data=b"{not json",
                                 headers={**AGENT, "Content-Type": "application/json"})
    assert bad_json.status == 400
    not_object = await client.post(url, json=["a"], headers=AGENT)
    assert not_object.status == 400
    form = await client.post(url, data={"body": "x"}, headers=AGENT)
    assert form.status == 415


async def test_reply_is_recorded_and_enqueued_by_dotted_name(
    client: Client, sync_redis: redis.Redis
) -> None:
    ticket = await inbound(client)
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                                 json={"body": "Bonjour & bienvenue <3 👋"}, headers=AGENT)
    assert response.status == 202
    event = await response.json()
    assert event["type"] == "agent_reply" and event["delivery"] == "queued"
    assert event["author"] == "alice" and event["body"] == "Bonjour & bienvenue <3 👋"
    jobs = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer).get_jobs()
    assert [(j.func_name, j.args) for j in jobs] == [
        (SEND_OUTBOUND, [{"ticket_id": ticket["id"], "event_id": event["id"]}])]


async def test_reply_validation(client: Client) -> None:
    ticket = await inbound(client)
    url = f"/api/v1/tickets/{ticket['id']}/replies"
    for payload in ({}, {"body": ""}, {"body": "x" * 1601}, {"body": 3}):
        assert (await client.post(url, json=payload, headers=AGENT)).status == 422


async def test_reply_outside_the_whatsapp_window_is_refused_before_sending(
    client: Client, sync_redis: redis.Redis
) -> None:
    ticket = await inbound(client)
    sync_redis.hset(keys.contact(ticket["contact"]["id"]), "window_until_ms", 1)
    response = await client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                                 json={"body": "late"}, headers=AGENT)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "outside_window"
    assert Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer).count == 0


async def test_ending_the_session(client: Client) -> None:
    ticket = await inbound(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    ended = await client.post(f"{url}/session/end", headers=AGENT)
    body = await ended.json()
    assert ended.status == 200
    assert body["session"] == {"state": "ended", "ended_reason": "agent"}
    assert body["status"] == ticket["status"]
    again = await client.post(f"{url}/session/end", headers=AGENT)
    assert again.status == 409
    reply = await client.post(f"{url}/replies", json={"body": "still there?"}, headers=AGENT)
    assert reply.status == 409
    assert (await reply.json())["error"]["code"] == "session_ended"
    note = await client.post(f"{url}/notes", json={"body": "customer left"}, headers=AGENT)
    assert note.status == 201
    assert (await note.json())["type"] == "note"
    nxt = await inbound(client, "me again")
    assert nxt["id"] != ticket["id"] and nxt["status"] == "new"
    assert nxt["follow_up_of"] is None


async def test_follow_up_links_both_ways_after_close(client: Client) -> None:
    ticket = await inbound(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    assert (await client.patch(url, json={"status": "closed"}, headers=AGENT)).status == 200
    follow = await inbound(client, "one more question")
    assert follow["id"] != ticket["id"]
    assert follow["follow_up_of"] == ticket["id"]
    old = await (await client.get(url, headers=AGENT)).json()
    assert old["follow_ups"] == [follow["id"]] and old["status"] == "closed"


async def test_solved_ticket_reopens_on_reply(client: Client) -> None:
    ticket = await inbound(client)
    url = f"/api/v1/tickets/{ticket['id']}"
    await client.patch(url, json={"status": "solved"}, headers=AGENT)
    again = await inbound(client, "not fixed")
    assert again["id"] == ticket["id"] and again["status"] == "open"
    assert again["solved_at"] is not None


async def test_openapi_document_is_served_and_lists_every_route(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    missing = {s for s in served if s not in documented and s[1] not in ("/metrics",
                                                                          "/api/openapi.json")
               and not s[1].startswith("/app")}  # the workspace's pages: HTML, not the API
    assert not missing


async def test_health_ready_and_metrics(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["redis"] == "ok"
    await inbound(client)
    text = await (await client.get("/metrics", headers=SCRAPER)).text()
    assert 'bridge_inbound_messages_total{action="new_ticket",channel="whatsapp"}' in text


async def test_routine_inbound_outcomes_log_at_debug_and_a_reopen_at_info(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """New tickets, appends and duplicates are the bulk of traffic (counted in /metrics);
    a line each at info cost the web process 10% of its CPU under new conversations."""
    caplog.set_level(logging.INFO, logger="bridge.webhooks")
    ticket = await inbound(client)
    await inbound(client, "and another thing")
    assert [r for r in caplog.records if r.name == "bridge.webhooks"] == []
    await client.patch(f"/api/v1/tickets/{ticket['id']}", json={"status": "solved"},
                       headers=AGENT)
    await inbound(client, "not fixed")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bridge.webhooks"]
    assert "action=reopen" in line and f"ticket={ticket['id']}" in line
