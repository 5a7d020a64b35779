"""What the send job's tests share: Twilio's answers as respx returns them, the form the
sender posted, a routed reply to send, and the service under test with an injected clock
(the contact's 24-hour window opens at NOW)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx

from bridge.core.messages import Channel
from bridge.core.tickets import EventType
from bridge.store.tickets import TicketStore
from tests.conftest import ACCOUNT_SID
from tests.factories import inbound_message, routed_reply
from workers.outbound import OutboundService, RetryPolicy

NOW = 1_700_000_000_000
HOUR = 3600 * 1000
API = "https://api.twilio.com"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CUSTOMER = "whatsapp:+33612345678"
TEMPLATE = "HX" + "b" * 32
BUTTONS = "HX" + "c" * 32
FAST = RetryPolicy(max_attempts=3, backoff_s=(2, 10), jitter=0.0)


def created(sid: str = "SM" + "1" * 32, status: str = "queued") -> httpx.Response:
    return httpx.Response(201, json={"sid": sid, "status": status, "account_sid": ACCOUNT_SID,
                                     "to": CUSTOMER, "body": ""})


def twilio_error(status: int, code: int, message: str = "error",
                 headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={
        "code": code, "message": message, "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}"})


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True, strict_parsing=True)


def service(store: TicketStore, sender: Any, *, at: int = NOW + 60_000,
            policy: RetryPolicy = FAST) -> OutboundService:
    return OutboundService(store, sender, policy=policy, clock=lambda: at)


async def reply(store: TicketStore, body: str = "Bonjour & <bienvenue> 👋",
                data: dict[str, Any] | None = None, *, address: str = CUSTOMER,
                channel: Channel = Channel.WHATSAPP, etype: EventType = EventType.AGENT_REPLY,
                sid: str = "SM" + "a" * 32) -> tuple[str, str]:
    """A routed customer message (opens the window at NOW), then an agent reply."""
    message = inbound_message(sid=sid, address=address, at_ms=NOW, channel=channel)
    return await routed_reply(store, body, data, message=message, etype=etype,
                              reply_at_ms=NOW + 1000)
