"""Inbound and outbound message values, translated once at the channel edge."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    WHATSAPP = "whatsapp"
    WIDGET = "widget"


@dataclass(frozen=True)
class Media:
    url: str
    content_type: str


@dataclass(frozen=True)
class Location:
    latitude: str
    longitude: str
    address: str = ""
    label: str = ""


@dataclass(frozen=True, kw_only=True)
class InboundMessage:
    """One customer message, whatever the channel.

    `contact_address` is the provider's address kept whole (`whatsapp:+33612345678`,
    `whatsapp:US.13491208655302741918`, a widget visitor id): never parsed as digits.
    """

    channel: Channel
    provider_id: str
    contact_address: str
    received_at_ms: int
    body: str = ""
    to: str = ""
    media: tuple[Media, ...] = ()
    location: Location | None = None
    button_payload: str = ""
    button_text: str = ""
    replied_to_id: str = ""
    profile_name: str = ""
    wa_id: str = ""
    external_user_id: str = ""
    message_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InboundMessage:
        values = dict(data)
        values["channel"] = Channel(values["channel"])
        values["media"] = tuple(Media(**m) for m in values.get("media", ()))
        loc = values.get("location")
        values["location"] = Location(**loc) if loc else None
        return cls(**values)

    def summary(self) -> str:
        """A short text for thread views when the body is empty (media, location)."""
        if self.body:
            return self.body
        if self.media:
            kinds = ", ".join(m.content_type for m in self.media)
            return f"[{len(self.media)} attachment(s): {kinds}]"
        if self.location:
            return f"[location {self.location.latitude},{self.location.longitude}]"
        return self.button_text


# Customers who write write again: their id is found rather than recomputed (an HMAC in
# Python costs ~5 µs of a webhook's few hundred). Bounded: about 2 MB when full.
@functools.lru_cache(maxsize=8192)
def contact_id_for(key: bytes, channel: Channel | str, address: str) -> str:
    """A short, stable id for one address on one channel; it is the Redis hash tag too.

    Keyed (HMAC-SHA-256 with BRIDGE_CONTACT_KEY): an unkeyed hash of a phone number is
    reversed by trying the numbers of a country (a few thousand guesses for one prefix), so
    without the key an id seen in a log or a URL tells nothing about the address.
    """
    if not key:
        raise ValueError("contact_id_for needs a non-empty key (BRIDGE_CONTACT_KEY)")
    mac = hmac.new(key, f"{channel}\x00{address}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    """What a worker sends: a free-form body inside the window, a template outside it."""

    channel: Channel
    to: str
    body: str = ""
    content_sid: str = ""
    content_variables: dict[str, str] = field(default_factory=dict)
