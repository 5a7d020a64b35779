"""The export's change-log consumer: which endpoints get which events, and a batch handed
again gives the same webhook-ids."""

from __future__ import annotations

import json

import redis
import redis.asyncio

from bridge.core.tickets import EventType, Status
from bridge.store.changelog import ChangeLog
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox
from bridge.store.tickets import TicketStore
from tests.export_support import export_changes
from tests.factories import ids, inbound, now_ms
from workers.export_consumer import ExportConsumer


async def outbox_types(aredis: redis.asyncio.Redis, endpoint_id: str) -> list[str]:
    items = await Outbox(aredis, endpoint_id).read("0-0", count=1000, block_ms=None)
    return [i.type for i in items]


async def test_endpoints_get_the_events_they_listen_to(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    endpoints = EndpointStore(aredis)
    everything, _ = await endpoints.create(url="https://a.example.com/", events=("*",),
                                           now_ms=now_ms())
    openings, _ = await endpoints.create(url="https://b.example.com/",
                                         events=("ticket.created",), now_ms=now_ms())
    switched_off, _ = await endpoints.create(url="https://c.example.com/", events=("*",),
                                             now_ms=now_ms())
    await endpoints.update(switched_off.id, enabled=False)
    tid = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.SOLVED)
    await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                              event=(EventType.NOTE, "résolu", {}))
    await export_changes(aredis, sync_redis, store)
    assert await outbox_types(aredis, everything.id) == [
        "ticket.created", "message.received", "ticket.status_changed", "note.added"]
    assert await outbox_types(aredis, openings.id) == ["ticket.created"]
    assert await outbox_types(aredis, switched_off.id) == []


async def test_a_batch_handed_again_appends_the_same_ids(
        store: TicketStore, aredis: redis.asyncio.Redis) -> None:
    endpoint, _ = await EndpointStore(aredis).create(url="https://a.example.com/",
                                                     events=("*",), now_ms=now_ms())
    await inbound(store, "Bonjour")
    changes = await ChangeLog(aredis).all_entries()
    consumer = ExportConsumer(store, EndpointStore(aredis))
    await consumer.handle(changes)
    await consumer.handle(changes)  # the relay died before saving its position
    items = await Outbox(aredis, endpoint.id).read("0-0", count=100, block_ms=None)
    first, again = items[:2], items[2:]
    assert [i.webhook_id for i in first] == [i.webhook_id for i in again]
    assert [json.loads(i.body) for i in first] == [json.loads(i.body) for i in again]


async def test_without_endpoints_the_consumer_reads_nothing(
        store: TicketStore, aredis: redis.asyncio.Redis) -> None:
    await inbound(store, "Bonjour")
    consumer = ExportConsumer(store, EndpointStore(aredis))
    await consumer.handle(await ChangeLog(aredis).all_entries())
    assert consumer.appended == 0
