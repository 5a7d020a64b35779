"""`bridge migrate contact-ids`: contacts stored under the unkeyed ids of earlier versions move
to their keyed ids, with their tickets, events, deliveries and every reference to them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from bridge.app import create_app
from bridge.cli import main
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.tickets import Delivery
from bridge.store import keys
from bridge.store.migrate import MAPPING, legacy_contact_id, migrate_contact_ids
from bridge.store.tickets import TicketStore
from config.settings import Settings
from tests.conftest import AGENT_TOKEN, CONTACT_KEY, contact_id
from tests.factories import inbound_form, post_signed

Client = TestClient[Any, Any]
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
ADDRESS = "whatsapp:+33612345678"
OLD = legacy_contact_id("whatsapp", ADDRESS)
NEW = contact_id(Channel.WHATSAPP, ADDRESS)


def keyed(channel: str, address: str) -> str:
    return contact_id(channel, address)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, sync_redis: redis.Redis) -> Client:
    return await aiohttp_client(create_app(settings))


async def store_as_before(aredis: redis.asyncio.Redis, *, legacy_layout: bool = True
                          ) -> tuple[str, str]:
    """A contact as an earlier version stored it (unkeyed id): a ticket with two customer
    messages, an agent reply that was sent (provider id reference), an assignee."""
    legacy = TicketStore(aredis, contact_key=b"unused")
    legacy.contact_id = lambda msg: legacy_contact_id(  # type: ignore[method-assign]
        msg.channel, msg.contact_address)
    now = int(time.time() * 1000)
    tid = ""
    for n in range(2):
        msg = InboundMessage(channel=Channel.WHATSAPP, provider_id=f"SMold{n}",
                             contact_address=ADDRESS, received_at_ms=now + n, body=f"m{n}")
        result = await legacy.route_inbound(msg, RatingSignal(), ChannelPolicy(), now_ms=now + n)
        tid = result.ticket_id or ""
    assert result.contact_id == OLD
    if legacy_layout:
        await to_legacy_layout(aredis, OLD)
    return tid, now


# Where an earlier version kept the contact hash: the {c:<id>} layout, before partitions.
OLD_CONTACT = f"{keys.legacy_contact_prefix(OLD)}:contact"


async def to_legacy_layout(aredis: redis.asyncio.Redis, cid: str) -> None:
    """Rename the contact's keys to the layout of earlier versions (one hash tag per
    contact, no change log), as an upgraded store holds them."""
    prefix = keys.contact_prefix(cid)
    async for raw in aredis.scan_iter(match=f"{prefix}:*".replace("{", "\\{").replace(
            "}", "\\}")):
        name = raw.decode()
        await aredis.rename(name, keys.legacy_contact_prefix(cid) + name[len(prefix):])
    async for log in aredis.scan_iter(match="{p:*}:log"):
        await aredis.delete(log)


async def reply_sent(client: Client, store: TicketStore, tid: str) -> str:
    response = await client.post(f"/api/v1/tickets/{tid}/replies", json={"body": "Bonjour"},
                                 headers=AGENT)
    assert response.status == 202
    eid = (await response.json())["id"]
    await store.set_delivery(tid, eid, {"state": Delivery.SENT.value, "provider_id": "SMout1"})
    assert (await client.patch(f"/api/v1/tickets/{tid}", json={"assignee": "alice"},
                               headers=AGENT)).status == 200
    return str(eid)


async def test_a_stored_contact_moves_to_its_keyed_id_and_its_ticket_continues(
        client: Client, aredis: redis.asyncio.Redis, store: TicketStore) -> None:
    tid, _ = await store_as_before(aredis, legacy_layout=False)
    eid = await reply_sent(client, store, tid)
    await to_legacy_layout(aredis, OLD)  # as the earlier version left it
    assert await aredis.keys(f"{{c:{OLD}}}*")

    report = await migrate_contact_ids(aredis, keyed)
    assert (report.moved, report.already, report.skipped, report.provider_refs) == (1, 0, [], 1)

    assert await aredis.keys(f"{{c:{OLD}}}*") == []
    assert await aredis.exists(keys.index("contact", OLD), MAPPING) == 0
    assert await aredis.zscore(keys.OPENING, OLD) is None
    # The API finds the ticket, its contact and its thread under the new id.
    ticket = await (await client.get(f"/api/v1/tickets/{tid}", headers=AGENT)).json()
    assert ticket["contact"]["id"] == NEW and ticket["contact"]["address"] == ADDRESS
    assert ticket["assignee"] == "alice"
    listed = await (await client.get(f"/api/v1/tickets?contact={NEW}", headers=AGENT)).json()
    assert [t["id"] for t in listed["tickets"]] == [tid]
    events = await (await client.get(f"/api/v1/tickets/{tid}/events", headers=AGENT)).json()
    assert {"m0", "m1", "Bonjour"} <= {e["body"] for e in events["events"]}
    # A delivery callback for the reply sent before the move still lands.
    assert await store.delivery_ref("SMout1") == (tid, eid)
    assert await store.record_status_callback("SMout1", Delivery.DELIVERED)
    assert (await store.delivery_state(tid, eid))["state"] == Delivery.DELIVERED.value
    # A new message from the same number continues the same ticket.
    response = await post_signed(client, "/webhooks/twilio", inbound_form("encore",
                                                                          sender=ADDRESS))
    assert response.status == 200
    listed = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    assert [t["id"] for t in listed["tickets"]] == [tid]
    assert listed["tickets"][0]["message_count"] == 3
    # Idempotent: a second run finds nothing to move.
    again = await migrate_contact_ids(aredis, keyed)
    assert (again.moved, again.already) == (0, 1)


async def test_an_interrupted_migration_completes_on_the_next_run(
        aredis: redis.asyncio.Redis, store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid, _ = await store_as_before(aredis)
    await store.set_delivery(tid, "0-1", {"state": Delivery.SENT.value, "provider_id": "SMx"})
    real_delete = aredis.delete

    async def dies_on_the_old_contact(*names: Any) -> int:
        if OLD_CONTACT in names:
            raise redis.ConnectionError("killed")
        return int(await real_delete(*names))

    monkeypatch.setattr(aredis, "delete", dies_on_the_old_contact)
    with pytest.raises(redis.ConnectionError):
        await migrate_contact_ids(aredis, keyed)
    monkeypatch.setattr(aredis, "delete", real_delete)
    # Copied, old ticket keys already gone, the contact hash left for the rerun.
    assert await aredis.exists(OLD_CONTACT, keys.contact(NEW)) == 2

    report = await migrate_contact_ids(aredis, keyed)
    assert report.moved == 1 and report.provider_refs == 1
    assert await aredis.keys(f"{{c:{OLD}}}*") == []
    assert (await store.get_ticket(tid)).contact_id == NEW
    assert await store.delivery_ref("SMx") == (tid, "0-1")
    assert (await aredis.get(keys.provider_message("SMx"))).startswith(NEW.encode())
    events, _ = await store.events(tid)
    assert sorted(e.body for e in events) == ["m0", "m1"]


def test_the_cli_command_reports_what_it_moved(redis_url: str, sync_redis: redis.Redis
                                               ) -> None:
    async def seed() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await store_as_before(client)
        finally:
            await client.aclose()

    asyncio.run(seed())
    env = {"REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY}
    result = CliRunner().invoke(main, ["migrate", "contact-ids"], env=env)
    assert result.exit_code == 0, result.output
    assert "moved 1 contact(s)" in result.output
    assert sync_redis.exists(keys.contact(NEW)) and not sync_redis.exists(OLD_CONTACT)
    result = CliRunner().invoke(main, ["migrate", "contact-ids"], env=env)
    assert "moved 0 contact(s); 1 already keyed" in result.output
    # Without the key, production settings refuse before touching anything.
    refused = CliRunner().invoke(main, ["migrate", "contact-ids"], env={"REDIS_URL": redis_url})
    assert refused.exit_code != 0 and "BRIDGE_CONTACT_KEY" in refused.output


async def test_many_contacts_are_counted_once_and_an_unusable_one_is_left_named(
        aredis: redis.asyncio.Redis) -> None:
    legacy = TicketStore(aredis, contact_key=b"unused")
    legacy.contact_id = lambda msg: legacy_contact_id(  # type: ignore[method-assign]
        msg.channel, msg.contact_address)
    now = int(time.time() * 1000)
    addresses = [f"whatsapp:+336{n:08d}" for n in range(30)]
    for n, address in enumerate(addresses):
        msg = InboundMessage(channel=Channel.WHATSAPP, provider_id=f"SMm{n}",
                             contact_address=address, received_at_ms=now, body="hi")
        await legacy.route_inbound(msg, RatingSignal(), ChannelPolicy(), now_ms=now)
    await aredis.hset(keys.contact("00000000deadbeef"), "cur", "999")
    report = await migrate_contact_ids(aredis, keyed)
    assert (report.moved, report.already) == (30, 0)
    assert report.skipped == [keys.contact("00000000deadbeef")]
    for address in addresses:
        assert await aredis.hget(keys.contact(keyed("whatsapp", address)), "address") \
            == address.encode()
        assert not await aredis.exists(keys.contact(legacy_contact_id("whatsapp", address)))
    assert await aredis.exists(keys.contact("00000000deadbeef"))
