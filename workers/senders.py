"""Senders: put one outbound message on the wire (Twilio) or in the local outbox.

A sender makes exactly one attempt and reports it: a `SendResult`, or a `SendError` that says
whether trying again can help. Which content to send, when to retry and what to record are
decided by workers.outbound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from twilio.base.exceptions import TwilioException, TwilioRestException

from bridge.channels.twilio import (
    TRANSIENT_CODES,
)
from bridge.core.tickets import TWILIO_DELIVERY, Delivery
from bridge.store.outbox import Outbox
from config.settings import Settings
from workers.twilio_client import HttpxTwilioHttpClient, twilio_client

STATUS_CALLBACK_PATH = "/webhooks/twilio/status"

# Twilio's error codes live with the channel adapter (bridge.channels.twilio).


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    ticket_id: str
    event_id: str
    to: str
    body: str = ""
    content_sid: str = ""
    content_variables: Mapping[str, Any] = field(default_factory=dict)
    media_urls: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "content" if self.content_sid else "body"


@dataclass(frozen=True)
class SendResult:
    provider_id: str
    # Twilio answers queued/accepted: status callbacks move the message forward from there.
    delivery: Delivery
    provider_status: str = ""


class SendError(Exception):
    """One failed attempt.

    transient: another attempt later may succeed.
    ambiguous: the request may have reached the provider, so the message may exist: the
    caller must not send it again blindly (workers.outbound marks it `send_unconfirmed`).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        transient: bool,
        ambiguous: bool = False,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient
        self.ambiguous = ambiguous
        self.http_status = http_status
        self.retry_after_s = retry_after_s


class Sender(Protocol):
    name: str

    async def send(self, message: OutboundMessage) -> SendResult: ...

    async def aclose(self) -> None: ...


def classify_twilio_error(
    status: int, code: int | str | None, message: str, *, retry_after_s: float | None = None
) -> SendError:
    """Twilio's answer -> transient or permanent (Twilio's error pages, e.g.
    https://www.twilio.com/docs/api/errors/20429 and .../63016)."""
    code_s = str(code) if code else str(status)
    if status == 429 or code_s in TRANSIENT_CODES:
        # Twilio: requests answered 429 "aren't processed and are safe to retry".
        return SendError(code_s, message, transient=True, http_status=status,
                         retry_after_s=retry_after_s)
    if status >= 500:
        # Ambiguous: the request reached Twilio and we cannot tell whether a message was
        # created (its API has no idempotency key), so it is not re-sent blindly.
        return SendError(code_s, message, transient=True, ambiguous=True, http_status=status,
                         retry_after_s=retry_after_s)
    return SendError(code_s, message, transient=False, http_status=status)


def classify_transport_error(exc: httpx.TransportError) -> SendError:
    """Network failures. Before the request left (connect, pool) nothing can have been sent;
    after it (read/write timeouts, dropped connections) the outcome is ambiguous."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return SendError("timeout", f"could not connect to Twilio in time ({exc!r})",
                         transient=True)
    if isinstance(exc, httpx.ConnectError):
        return SendError("network_error", f"could not connect to Twilio ({exc})",
                         transient=True)
    if isinstance(exc, httpx.TimeoutException):
        return SendError("timeout", f"Twilio did not answer in time ({exc!r})",
                         transient=True, ambiguous=True)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return SendError("config_error", f"TWILIO_API_URL cannot be used: {exc}",
                         transient=False)
    return SendError("network_error", f"connection to Twilio failed ({exc!r})",
                     transient=True, ambiguous=True)


def _retry_after(http: HttpxTwilioHttpClient) -> float | None:
    response = http.last_response
    headers = getattr(response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return float(raw) if raw else None
    except ValueError:
        return None  # an HTTP date: rare from Twilio, and our own backoff covers it


class TwilioSender:
    """Twilio's Messages API through twilio-python over httpx (workers.twilio_client)."""

    name = "twilio"

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None) -> None:
        if not settings.twilio_enabled:
            raise ValueError("TwilioSender needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self.client, self.http = twilio_client(
            settings.twilio_account_sid, str(settings.twilio_auth_token),
            base_url=settings.twilio_api_url, http=http,
        )
        self.status_callback = settings.public_base_url + STATUS_CALLBACK_PATH
        # One of the two identifies the sender. A Messaging Service picks the number from
        # its pool, so From is only sent without one (a From outside the pool is refused).
        self.sender_fields: dict[str, str] = (
            {"messaging_service_sid": settings.twilio_messaging_service_sid}
            if settings.twilio_messaging_service_sid
            else {"from_": settings.twilio_whatsapp_from}
        )

    def create_kwargs(self, message: OutboundMessage) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "to": message.to,
            "status_callback": self.status_callback,
            **self.sender_fields,
        }
        if message.content_sid:
            # Content API: Body and MediaUrl are superseded by the template, so omitted.
            kwargs["content_sid"] = message.content_sid
            if message.content_variables:
                # twilio-python sends this field as-is: it must already be a JSON string.
                kwargs["content_variables"] = json.dumps(
                    dict(message.content_variables), ensure_ascii=False)
        else:
            if message.body:
                kwargs["body"] = message.body
            if message.media_urls:
                kwargs["media_url"] = list(message.media_urls)
        return kwargs

    def send_sync(self, message: OutboundMessage) -> SendResult:
        try:
            created = self.client.messages.create(**self.create_kwargs(message))
        except TwilioRestException as exc:
            # twilio-python prefixes Twilio's own message with its operation's name.
            text = str(exc.msg).removeprefix("Unable to create record: ")
            raise classify_twilio_error(
                int(exc.status), exc.code, text, retry_after_s=_retry_after(self.http)
            ) from exc
        except TwilioException as exc:
            # RFC 9457 answers (TwilioServiceException) carry status and code attributes.
            status = int(getattr(exc, "status", 0) or 0)
            raise classify_twilio_error(
                status or 500, getattr(exc, "code", None), str(exc),
                retry_after_s=_retry_after(self.http),
            ) from exc
        except httpx.TransportError as exc:
            raise classify_transport_error(exc) from exc
        answered = str(created.status or "queued")
        return SendResult(
            str(created.sid), TWILIO_DELIVERY.get(answered, Delivery.QUEUED), answered)

    async def send(self, message: OutboundMessage) -> SendResult:
        # twilio-python is synchronous; a thread keeps the job's event loop free.
        return await asyncio.to_thread(self.send_sync, message)

    async def aclose(self) -> None:
        self.http.close()


class OutboxSender:
    """No Twilio credentials: record the message in the local outbox, "delivered" at once."""

    name = "outbox"

    def __init__(self, outbox: Outbox, *, sender: str = "") -> None:
        self.outbox = outbox
        self.sender = sender

    async def send(self, message: OutboundMessage) -> SendResult:
        entry = await self.outbox.append(
            to=message.to,
            at_ms=int(time.time() * 1000),
            sender=self.sender,
            body="" if message.content_sid else message.body,
            content_sid=message.content_sid,
            content_variables=dict(message.content_variables),
            media_urls=() if message.content_sid else message.media_urls,
            ticket_id=message.ticket_id,
            event_id=message.event_id,
        )
        return SendResult(entry.provider_id, Delivery.DELIVERED, "delivered")

    async def aclose(self) -> None:
        return None


def build_sender(settings: Settings, outbox: Outbox) -> Sender:
    if settings.twilio_enabled:
        return TwilioSender(settings)
    return OutboxSender(
        outbox, sender=settings.twilio_whatsapp_from or settings.twilio_messaging_service_sid
    )
