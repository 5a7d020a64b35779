"""The webhook export's change-log consumer: turns each change into export events and
appends one delivery per subscribed endpoint to that endpoint's outbox. It runs in the
relay process (workers/relay.py), at least once and in order per partition, so in order
per ticket; it never speaks HTTP (workers/export.py delivers).

A batch handed again (the relay died before saving its position) appends its deliveries
again with the same webhook-ids: receivers see a duplicate, never a gap.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bridge.core.changes import OPENING_ACTIONS, Change, ChangeKind
from bridge.core.export_events import ExportItem, export_items, payload, subscribed
from bridge.core.export_policy import Endpoint
from bridge.core.tickets import Contact
from bridge.store.changelog import EXPORT_CONSUMER
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import NewDelivery, append
from bridge.store.records import NotFound
from bridge.store.tickets import TicketStore
from config.settings import Settings

# Changes whose events are read at once (one round trip each, side by side).
READ_CONCURRENCY = 32


@dataclass
class ExportConsumer:
    store: TicketStore
    endpoints: EndpointStore
    name: str = EXPORT_CONSUMER
    appended: int = 0
    _active: list[Endpoint] = field(default_factory=list)
    _version: int = -1

    @classmethod
    def build(cls, settings: Settings, aredis: Redis) -> ExportConsumer:
        return cls(TicketStore(aredis, contact_key=settings.contact_key_bytes),
                   EndpointStore(aredis))

    async def active_endpoints(self) -> list[Endpoint]:
        """The enabled endpoints: one GET per batch says whether the list changed."""
        version = await self.endpoints.version()
        if version != self._version:
            self._active = [e for e in await self.endpoints.all() if e.enabled]
            self._version = version
        return self._active

    async def _items(self, change: Change) -> list[ExportItem]:
        events = await self.store.events_of_change(change)
        contact: Contact | None = None
        if change.kind is ChangeKind.ROUTED and change.action in OPENING_ACTIONS:
            try:
                contact = await self.store.get_contact(change.contact_id)
            except NotFound:
                contact = None
        return export_items(change, events, contact)

    async def handle(self, changes: list[Change]) -> None:
        active = await self.active_endpoints()
        if not active:
            return
        items: list[ExportItem] = []
        for start in range(0, len(changes), READ_CONCURRENCY):
            chunk = changes[start:start + READ_CONCURRENCY]
            for found in await asyncio.gather(*(self._items(c) for c in chunk)):
                items += found
        deliveries: list[NewDelivery] = []
        for item in items:
            bodies: dict[bool, str] = {}
            for endpoint in active:
                if not subscribed(endpoint.events, item.type):
                    continue
                if endpoint.anonymize not in bodies:
                    bodies[endpoint.anonymize] = json.dumps(
                        payload(item, anonymize=endpoint.anonymize), ensure_ascii=False,
                        separators=(",", ":"))
                deliveries.append(NewDelivery(endpoint.id, item.webhook_id, item.ticket_id,
                                              item.type.value, bodies[endpoint.anonymize],
                                              item.at_ms))
        self.appended += await append(self.store.redis, deliveries)
