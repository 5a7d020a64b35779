"""What goes out for an outbound event: its body (+ media), a Content API message, or
outside WhatsApp's 24-hour window the approved template the event names (workers.outbound
decides when and records how it went).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.core.messages import Channel
from bridge.core.tickets import Contact, Event
from workers.senders import OutboundMessage, SendError

# How a message went out (the state's "via"): the body, a Content API message, or the
# approved template used outside the window.
VIA_BODY = "body"
VIA_CONTENT = "content"
VIA_FALLBACK = "fallback"


class InvalidEvent(ValueError):
    """The event's data cannot be turned into a message (a bug in whoever recorded it)."""


def _str_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{name} must be an object")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, Mapping | list | tuple):
            raise InvalidEvent(f"{name}.{k} must be a text or a number")
        out[str(k)] = "" if v is None else str(v)
    return out


def compose(event: Event, contact: Contact, *, at_ms: int, fallback_only: bool = False
            ) -> tuple[OutboundMessage, str]:
    """The message for an event and how it goes out (VIA_*). Raises InvalidEvent, or
    SendError(outside_window) when only a template may go out and there is none."""
    data = event.data
    fallback = fallback_message(event, contact)
    if fallback_only or (contact.channel == Channel.WHATSAPP and not contact.window_open(at_ms)):
        if fallback is None:
            raise SendError(
                "outside_window",
                "the customer's last message is more than 24 hours old: WhatsApp only allows "
                "an approved template now, and this message names none",
                transient=False,
            )
        return fallback, VIA_FALLBACK
    content_sid = data.get("content_sid")
    if content_sid:
        if not isinstance(content_sid, str):
            raise InvalidEvent("content_sid must be a text")
        variables = _str_map(data.get("content_variables"), "content_variables")
        return OutboundMessage(ticket_id=event.ticket_id, event_id=event.id, to=contact.address,
                               content_sid=content_sid, content_variables=variables), VIA_CONTENT
    media = data.get("media_urls") or []
    if not isinstance(media, list) or not all(isinstance(m, str) for m in media):
        raise InvalidEvent("media_urls must be a list of URLs")
    if not event.body and not media:
        raise InvalidEvent("nothing to send: no body, no media, no content_sid")
    return OutboundMessage(ticket_id=event.ticket_id, event_id=event.id, to=contact.address,
                           body=event.body, media_urls=tuple(media)), VIA_BODY


def fallback_message(event: Event, contact: Contact) -> OutboundMessage | None:
    sid = event.data.get("fallback_content_sid")
    if not sid:
        return None
    if not isinstance(sid, str):
        raise InvalidEvent("fallback_content_sid must be a text")
    return OutboundMessage(
        ticket_id=event.ticket_id, event_id=event.id, to=contact.address, content_sid=sid,
        content_variables=_str_map(event.data.get("fallback_content_variables"),
                                   "fallback_content_variables"),
    )
