"""Builders: customer messages (InboundMessage, routed as the webhook routes them, then an
agent's reply) and signed Twilio requests (signed with twilio-python's own validator)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator

from bridge.core.csat import rating_signal
from bridge.core.messages import Channel, InboundMessage
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import RatingSignal
from bridge.core.tickets import EventType
from bridge.store.tickets import RouteResult, TicketStore
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN

PUBLIC_BASE_URL = "https://bridge.example.com"
CUSTOMER = "whatsapp:+33612345678"


def new_sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


def ids(result: Any) -> str:
    """The ticket id of a routing result (there must be one)."""
    assert result.ticket_id
    return str(result.ticket_id)


# ------------------------------------------------------------------ customer messages


def inbound_message(body: str = "Bonjour", *, sid: str | None = None, address: str = CUSTOMER,
                    at_ms: int | None = None, channel: Channel = Channel.WHATSAPP,
                    name: str = "", button_payload: str = "") -> InboundMessage:
    """One customer message as the webhook hands it to the store (received now unless
    `at_ms`; a fresh provider id unless `sid`)."""
    return InboundMessage(
        channel=channel, provider_id=sid or new_sid(), contact_address=address,
        received_at_ms=now_ms() if at_ms is None else at_ms, body=body, profile_name=name,
        button_payload=button_payload,
    )


# A fixed clock, for store tests that check exact times.
FIXED_NOW_MS = 1_700_000_000_123


def numbered_message(sid: str, address: str = CUSTOMER, *, body: str = "",
                     channel: Channel = Channel.WHATSAPP, at_ms: int = FIXED_NOW_MS
                     ) -> InboundMessage:
    """A message whose body names its provider id ("body SM3") unless `body` is given: a
    thread's order shows in its bodies."""
    return inbound_message(body or f"body {sid}", sid=sid, address=address, at_ms=at_ms,
                           channel=channel)


async def open_ticket(store: TicketStore, sid: str = "SM1", address: str = CUSTOMER, *,
                      channel: Channel = Channel.WHATSAPP, at_ms: int = FIXED_NOW_MS) -> str:
    """Route numbered_message(sid) from `address`: the id of the ticket it went to."""
    result = await store.route_inbound(
        numbered_message(sid, address, channel=channel, at_ms=at_ms), RatingSignal(),
        ChannelPolicy(), now_ms=at_ms)
    return ids(result)


async def inbound(
    store: TicketStore,
    body: str = "Bonjour",
    *,
    address: str = CUSTOMER,
    name: str = "Camille Martin",
    at_ms: int | None = None,
    button_payload: str = "",
    policy: ChannelPolicy | None = None,
) -> RouteResult:
    """Route one customer message as the webhook would (the rating signal included)."""
    message = inbound_message(body, address=address, name=name, at_ms=at_ms,
                              button_payload=button_payload)
    signal: RatingSignal = rating_signal(body=body, button_payload=button_payload,
                                         replied_to_id="")
    return await store.route_inbound(message, signal, policy or ChannelPolicy(),
                                     now_ms=message.received_at_ms)


async def routed_reply(store: TicketStore, body: str = "Bonjour !",
                       data: dict[str, Any] | None = None, *,
                       message: InboundMessage | None = None,
                       etype: EventType = EventType.AGENT_REPLY,
                       reply_at_ms: int | None = None) -> tuple[str, str]:
    """A customer message routed (by default `inbound_message()`: now, so the window is
    open), then alice's reply (or another outbound event) on its ticket at `reply_at_ms`
    (default: when the message came): (ticket id, event id)."""
    message = message or inbound_message()
    routed = await store.route_inbound(message, RatingSignal(), ChannelPolicy(),
                                       now_ms=message.received_at_ms)
    tid = ids(routed)
    at_ms = message.received_at_ms if reply_at_ms is None else reply_at_ms
    _, event_id = await store.update_ticket(tid, author="alice", now_ms=at_ms,
                                            event=(etype, body, data or {}))
    assert event_id
    return tid, event_id


# ------------------------------------------------------------------ signed Twilio requests


def inbound_form(body: str = "Bonjour", *, sender: str = "whatsapp:+33612345678",
                 sid: str | None = None, **extra: str) -> dict[str, str]:
    sid = sid or new_sid()
    form = {
        "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT_SID,
        "From": sender, "To": "whatsapp:+14155238886", "Body": body, "NumMedia": "0",
        "NumSegments": "1", "ProfileName": "Camille", "WaId": "33612345678",
        "SmsStatus": "received", "ApiVersion": "2010-04-01", "ReferralNumMedia": "0",
    }
    form.update(extra)
    return form


def sign(path: str, form: dict[str, str], *, token: str = AUTH_TOKEN,
         base: str = PUBLIC_BASE_URL) -> str:
    return str(RequestValidator(token).compute_signature(base + path, form))


async def post_signed(client: TestClient[Any, Any], path: str, form: dict[str, str],
                      **headers: str) -> Any:
    signature = sign(path, form)
    return await client.post(
        path, data=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": signature, **headers},
    )
