"""Realistic test data shared by the benchmarks: customers, message texts, and routing a
message through the store exactly as the webhook handler does."""

from __future__ import annotations

import json
import time

from redis.asyncio import Redis

from bench.corpus import BODIES, BUSINESS_NUMBER, NAMES, contact_address
from bridge.core.csat import rating_signal
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.store.tickets import RouteResult, TicketStore, message_data
from config.settings import DEFAULT_CONFIG_DIR, load_policies

# What the benchmarks' processes get as BRIDGE_CONTACT_KEY, and their stores' key.
CONTACT_KEY = "bench-contact-key-0123456789abcdef0123"


def bench_store(client: Redis) -> TicketStore:
    return TicketStore(client, contact_key=CONTACT_KEY.encode())


def whatsapp_policy() -> ChannelPolicy:
    """The shipped policy (config/bridge.toml), as the web process loads it."""
    return load_policies(DEFAULT_CONFIG_DIR / "bridge.toml")[Channel.WHATSAPP]


def inbound(contact: int, seq: int, *, body: str | None = None, run: str = "0") -> InboundMessage:
    """What bridge.channels.twilio.parse_inbound builds from a Twilio text message."""
    address = contact_address(contact)
    return InboundMessage(
        channel=Channel.WHATSAPP,
        provider_id=f"SM{run:0>8.8}{seq:024x}",
        contact_address=address,
        received_at_ms=int(time.time() * 1000),
        body=body if body is not None else BODIES[(contact + seq) % len(BODIES)],
        to=BUSINESS_NUMBER,
        profile_name=NAMES[contact % len(NAMES)],
        wa_id=address.removeprefix("whatsapp:+"),
        message_type="text",
    )


async def route(store: TicketStore, msg: InboundMessage, policy: ChannelPolicy) -> RouteResult:
    """The store call of bridge.web.webhooks.twilio_inbound, nothing more."""
    signal = rating_signal(body=msg.body, button_payload=msg.button_payload,
                           replied_to_id=msg.replied_to_id)
    return await store.route_inbound(msg, signal, policy, now_ms=msg.received_at_ms)


def event_fields(msg: InboundMessage) -> dict[str, str]:
    """The stream entry route.lua writes for a customer message (for bulk loading)."""
    return {
        "type": "customer_message",
        "at_ms": str(msg.received_at_ms),
        "author": "customer",
        "body": msg.summary(),
        "data": json.dumps(message_data(msg), ensure_ascii=False),
    }
