"""The webhook export end to end: endpoints made through the API, ticket changes through the
store and the API, the change-log consumer, the sender, and a real local receiver that
verifies every delivery with the `standardwebhooks` package."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import pytest
import redis
import redis.asyncio

from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox
from bridge.store.tickets import TicketStore
from bridge.web.openapi import DOCUMENT
from config.settings import Settings
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client, make_settings
from tests.export_support import (
    Receiver,
    export_changes,
    local_sender,
    payload_types,
    receiving,
)
from tests.factories import ids, inbound

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
CUSTOMERS = [f"whatsapp:+3361234560{n}" for n in range(4)]


@pytest.fixture
def settings(redis_url: str) -> Settings:
    # A local receiver: plain http (development) on loopback (the explicit setting).
    return make_settings(redis_url, development=True, export_allow_private=True)


async def new_endpoint(client: Client, url: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/webhook-endpoints", headers=ADMIN,
                                 json={"url": url, "events": ["*"], **fields})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["secret"].startswith("whsec_")
    return body


async def busy_day(client: Client, store: TicketStore) -> list[str]:
    """Customers write, agents work the tickets: every kind of export event but CSAT."""
    tickets = []
    for customer in CUSTOMERS:
        tickets.append(ids(await inbound(store, "Bonjour", address=customer, name="Camille")))
        await inbound(store, "ma commande ?", address=customer)
    for tid in tickets:
        for change in ({"status": "open", "assignee": "alice"}, {"tags": ["vip", "order"]}):
            response = await client.patch(f"/api/v1/tickets/{tid}", headers=AGENT, json=change)
            assert response.status == 200, await response.text()
        response = await client.post(f"/api/v1/tickets/{tid}/notes", headers=AGENT,
                                     json={"body": "client fidèle"})
        assert response.status == 201
        response = await client.post(f"/api/v1/tickets/{tid}/replies", headers=AGENT,
                                     json={"body": "Je regarde"})
        assert response.status == 202
    response = await client.post(f"/api/v1/tickets/{tickets[0]}/session/end", headers=AGENT)
    assert response.status == 200
    return tickets


async def queued_ids(aredis: redis.asyncio.Redis, endpoint_id: str) -> dict[str, list[str]]:
    """Each ticket's webhook-ids in outbox order (the order the change log gave them)."""
    out: dict[str, list[str]] = {}
    for item in await Outbox(aredis, endpoint_id).read("0-0", count=10_000, block_ms=None):
        out.setdefault(item.ticket_id, []).append(item.webhook_id)
    return out


async def drain(sender: Any, *, rounds: int = 50) -> None:
    for _ in range(rounds):
        if not await sender.step(max_block_ms=0):
            return
    raise AssertionError("the outbox did not drain")


async def test_every_delivery_verifies_and_arrives_in_order_per_ticket(
        client: Client, store: TicketStore, aredis: redis.asyncio.Redis,
        sync_redis: redis.Redis) -> None:
    async with receiving(Receiver()) as receiver:
        created = await new_endpoint(client, receiver.url, description="BI")
        receiver.secrets = [created["secret"]]
        await busy_day(client, store)
        await export_changes(aredis, sync_redis, store)
        endpoint = await EndpointStore(aredis).get(created["id"])
        sender = local_sender(aredis, endpoint)
        await drain(sender)
        await sender.client.aclose()
    assert receiver.unverified == []
    expected = await queued_ids(aredis, created["id"])
    assert receiver.by_ticket() == expected
    assert set(payload_types(receiver)) == {
        "ticket.created", "message.received", "ticket.status_changed", "ticket.assigned",
        "ticket.tagged", "note.added", "message.sent", "session.ended"}
    assert all(d.payload["schema_version"] == 1 for d in receiver.received)
    for delivery in receiver.received:  # as the OpenAPI document's webhooks section says
        documented = DOCUMENT["webhooks"][delivery.payload["type"]]["post"]
        schema = documented["requestBody"]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(
            {**schema, "components": DOCUMENT["components"]}).validate(delivery.payload)
    health = await (await client.get(f"/api/v1/webhook-endpoints/{created['id']}/health",
                                     headers=ADMIN)).json()
    assert health["state"] == "healthy" and health["backlog"] == 0
    assert health["delivered"] == len(receiver.received)


async def test_a_receiver_down_for_a_day_gets_everything_afterwards_in_order(
        client: Client, store: TicketStore, aredis: redis.asyncio.Redis,
        sync_redis: redis.Redis) -> None:
    now = [time.time()]  # moved a simulated day forward below
    up = [False]
    async with receiving(Receiver(status=lambda _: 200 if up[0] else 503)) as receiver:
        created = await new_endpoint(client, receiver.url)
        receiver.secrets = [created["secret"]]
        await busy_day(client, store)
        await export_changes(aredis, sync_redis, store)
        sender = local_sender(aredis, await EndpointStore(aredis).get(created["id"]),
                              clock=lambda: now[0])
        outbox = sender.outbox
        start = now[0]
        while now[0] - start < 24 * 3600:  # a simulated day of failed attempts
            await sender.step(max_block_ms=0)
            due = await outbox.next_due_ms()
            assert due is not None  # every ticket is held, waiting for its retry
            now[0] = max(now[0] + 1, due / 1000)
        assert receiver.received == []
        # More changes while it is down: they queue behind the held ones.
        await inbound(store, "toujours là ?", address=CUSTOMERS[1])
        await export_changes(aredis, sync_redis, store)
        up[0] = True
        for _ in range(40):
            await sender.step(max_block_ms=0)
            due = await outbox.next_due_ms()
            if due is None and not (await outbox.health()).backlog:
                break
            now[0] = max(now[0] + 1, (due or 0) / 1000)
        await sender.client.aclose()
    assert receiver.unverified == []
    assert receiver.by_ticket() == await queued_ids(aredis, created["id"])
    health = (await outbox.health())
    assert health.failed == 0 and health.retrying_tickets == 0


async def test_anonymised_endpoints_get_no_bodies_or_phone_numbers(
        client: Client, store: TicketStore, aredis: redis.asyncio.Redis,
        sync_redis: redis.Redis) -> None:
    async with receiving(Receiver()) as full, receiving(Receiver()) as anonymous:
        full_ep = await new_endpoint(client, full.url)
        anon_ep = await new_endpoint(client, anonymous.url, anonymize=True)
        full.secrets, anonymous.secrets = [full_ep["secret"]], [anon_ep["secret"]]
        await busy_day(client, store)
        await export_changes(aredis, sync_redis, store)
        for created in (full_ep, anon_ep):
            sender = local_sender(aredis, await EndpointStore(aredis).get(created["id"]))
            await drain(sender)
            await sender.client.aclose()
    everything = json.dumps([d.payload for d in full.received], ensure_ascii=False)
    anonymised = json.dumps([d.payload for d in anonymous.received], ensure_ascii=False)
    for personal in ("+33612345600", "Camille", "Bonjour", "client fidèle", "Je regarde"):
        assert personal in everything
        assert personal not in anonymised
    assert full.ids() == anonymous.ids()  # the same events, with the same ids


async def test_a_rotated_secret_signs_beside_the_new_one(
        client: Client, store: TicketStore, aredis: redis.asyncio.Redis,
        sync_redis: redis.Redis) -> None:
    async with receiving(Receiver()) as old_only, receiving(Receiver()) as new_only:
        created = await new_endpoint(client, old_only.url)
        rotated = await client.post(f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret",
                                    headers=ADMIN)
        assert rotated.status == 200
        new_secret = (await rotated.json())["secret"]
        assert new_secret != created["secret"]
        old_only.secrets, new_only.secrets = [created["secret"]], [new_secret]
        await inbound(store, "Bonjour")
        await export_changes(aredis, sync_redis, store)
        endpoint = await EndpointStore(aredis).get(created["id"])
        sender = local_sender(aredis, endpoint)
        await drain(sender)
        # The same deliveries to a receiver that only knows the new secret.
        await Outbox(aredis, endpoint.id).replay_since(0)
        sender.endpoint = type(endpoint)(**{**endpoint.__dict__, "url": new_only.url})
        await drain(sender)
        await sender.client.aclose()
    assert old_only.unverified == [] and new_only.unverified == []
    assert old_only.ids() == new_only.ids() and len(old_only.ids()) == 2


async def test_an_endpoint_switched_to_anonymised_data_gets_none_queued_before(
        client: Client, store: TicketStore, aredis: redis.asyncio.Redis,
        sync_redis: redis.Redis) -> None:
    """Deliveries are queued with the endpoint's setting of the moment; one switched to
    anonymize afterwards (then replayed, or still retrying) must still get no personal
    data, signed as sent."""
    async with receiving(Receiver()) as receiver:
        created = await new_endpoint(client, receiver.url)
        receiver.secrets = [created["secret"]]
        await busy_day(client, store)
        await export_changes(aredis, sync_redis, store)  # queued with personal data
        switched = await client.patch(f"/api/v1/webhook-endpoints/{created['id']}",
                                      json={"anonymize": True}, headers=ADMIN)
        assert switched.status == 200
        endpoint = await EndpointStore(aredis).get(created["id"])
        sender = local_sender(aredis, endpoint)
        await drain(sender)
        assert await Outbox(aredis, endpoint.id).replay_since(0) > 0
        await drain(sender)
        await sender.client.aclose()
    sent = json.dumps([d.payload for d in receiver.received], ensure_ascii=False)
    assert receiver.received and receiver.unverified == []
    for personal in ("+33612345600", "Camille", "Bonjour", "client fidèle", "Je regarde"):
        assert personal not in sent
