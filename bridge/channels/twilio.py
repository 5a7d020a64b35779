"""Twilio WhatsApp webhooks: decode the form once, verify the signature, build values.

Verification is twilio-python's RequestValidator (the exact algorithm, including the
with-and-without-default-port check), after one fast HMAC that accepts what Twilio sends
in the common case; everything else here is pure.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from bridge.channels.formdata import MalformedForm, parse_form
from bridge.core.messages import Channel, InboundMessage, Location, Media
from bridge.core.tickets import TWILIO_DELIVERY, Delivery

# Twilio error codes the bridge treats specially (senders, status callbacks, the relay).
TOO_MANY_REQUESTS = "20429"  # REST API concurrency limit: not processed, safe to retry
CHANNEL_RATE_LIMIT = "63018"  # WhatsApp sender throughput exceeded
OUTSIDE_WINDOW = "63016"  # free-form message outside the 24-hour window: send a template
OPTED_OUT = "21610"  # the recipient unsubscribed (replied STOP)
TRANSIENT_CODES = frozenset({TOO_MANY_REQUESTS, CHANNEL_RATE_LIMIT})

MAX_MEDIA = 10  # Twilio's limit per message
MAX_BODY_CHARS = 4096
MAX_FIELDS = 200  # Twilio sends 15-40; a hostile body may send thousands
# fullmatch, not `$`: `$` also matches before a trailing newline.
_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
# Deliberately loose: besides whatsapp:+E164, WhatsApp now sends business-scoped user ids
# (whatsapp:US.1349…, "CC." and up to 128 characters) and may send other forms; only a
# request Twilio signed gets here, and refusing a form we did not foresee would lose that
# customer's messages. The address is the ticket's key, kept whole.
_ADDRESS = re.compile(r"whatsapp:\S{1,200}")
_COUNT = re.compile(r"[0-9]{1,2}")  # ASCII digits only: str.isdigit() accepts '²'


FormData = MultiDictProxy[str]


class InvalidPayload(ValueError):
    """The request is not a well-formed Twilio webhook (answered 400, nothing written)."""


def decode_form(body: bytes, content_type: str) -> FormData:
    """application/x-www-form-urlencoded bytes -> a MultiDict; strict about encoding."""
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidPayload("expected application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidPayload("body is not valid UTF-8") from None
    # A decoded NUL comes from a raw NUL or from "%00" (the only escape that decodes to
    # one): checking the text once is cheaper than every decoded name and value.
    if "\x00" in text or "%00" in text:
        raise InvalidPayload("NUL bytes are not allowed")
    try:
        pairs = parse_form(text, max_fields=MAX_FIELDS)
    except MalformedForm as exc:
        raise InvalidPayload(f"malformed form body: {exc}") from None
    return MultiDictProxy(MultiDict(pairs))


def is_message_sid(value: str) -> bool:
    """A Twilio message sid: two capitals (SM, MM) and 32 hex digits."""
    return bool(_SID.fullmatch(value))


def signature_valid(*, url: str, form: FormData, signature: str, auth_token: str) -> bool:
    """Twilio signs the public URL it called plus the sorted POST parameters."""
    if not signature or not auth_token:
        return False
    # Twilio signs the URL as configured: try that first, as one HMAC. twilio-python's full
    # check (with and without the default port, SHA-256 when asked) runs only when it fails.
    # hmac.compare_digest: constant time like twilio's `compare`, in C.
    if hmac.compare_digest(_signature(url, form, auth_token),
                           signature.encode("utf-8", "replace")):
        return True
    return bool(RequestValidator(auth_token).validate(url, form, signature))


def _signature(url: str, form: FormData, auth_token: str) -> bytes:
    """RequestValidator.compute_signature's result (a property test holds it to that) at a
    third of its cost on every webhook: it sorts and joins name by name in Python; here one
    sort of the (name, value) pairs gives the same order (names, then values, duplicates
    once), and the key's HMAC state is set up once per token."""
    mac = _keyed_hmac(auth_token).copy()
    mac.update((url + "".join([name + value for name, value in sorted(set(form.items()))]))
               .encode("utf-8"))
    return base64.b64encode(mac.digest())


@functools.lru_cache(maxsize=4)
def _keyed_hmac(auth_token: str) -> hmac.HMAC:
    return hmac.new(auth_token.encode("utf-8"), digestmod=hashlib.sha1)


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise InvalidPayload(f"missing required field {name}")
    return value


def parse_inbound(form: FormData, *, received_at_ms: int) -> InboundMessage:
    """Every WhatsApp field that matters. `From` is kept whole: it may be a phone number
    (whatsapp:+33…) or a business-scoped user id (whatsapp:US.1349…)."""
    sid = _required(form, "MessageSid")
    if not _SID.fullmatch(sid):
        raise InvalidPayload("MessageSid is not a Twilio message sid")
    address = _required(form, "From")
    if not _ADDRESS.fullmatch(address):
        raise InvalidPayload("From must be a whatsapp: address (only WhatsApp is bridged)")
    body = form.get("Body", "")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidPayload(f"Body longer than {MAX_BODY_CHARS} characters")
    raw_count = form.get("NumMedia", "0") or "0"
    if not _COUNT.fullmatch(raw_count) or int(raw_count) > MAX_MEDIA:
        raise InvalidPayload(f"NumMedia must be a number from 0 to {MAX_MEDIA}")
    media = []
    for i in range(int(raw_count)):
        url = form.get(f"MediaUrl{i}", "")
        if not url.startswith(("https://", "http://")):
            raise InvalidPayload(f"MediaUrl{i} missing or not a URL")
        media.append(Media(url=url, content_type=form.get(f"MediaContentType{i}", "")))
    location = None
    if form.get("Latitude") or form.get("Longitude"):
        lat, lon = form.get("Latitude", ""), form.get("Longitude", "")
        try:
            if not (-90 <= float(lat) <= 90 and -180 <= float(lon) <= 180):
                raise ValueError
        except ValueError:
            raise InvalidPayload("Latitude/Longitude must be coordinates") from None
        location = Location(lat, lon, form.get("Address", ""), form.get("Label", ""))
    if not body and not media and location is None and not form.get("ButtonPayload"):
        raise InvalidPayload("message has no Body, media, location or button")
    return InboundMessage(
        channel=Channel.WHATSAPP,
        provider_id=sid,
        contact_address=address,
        received_at_ms=received_at_ms,
        body=body,
        to=form.get("To", ""),
        media=tuple(media),
        location=location,
        button_payload=form.get("ButtonPayload", ""),
        button_text=form.get("ButtonText", ""),
        replied_to_id=form.get("OriginalRepliedMessageSid", ""),
        profile_name=form.get("ProfileName", "")[:200],
        wa_id=form.get("WaId", ""),
        external_user_id=form.get("ExternalUserId", ""),
        message_type=form.get("MessageType", ""),
    )


@dataclass(frozen=True)
class StatusCallback:
    provider_id: str
    delivery: Delivery | None  # None: a status word this bridge does not track
    error_code: str
    error_message: str


def parse_status(form: FormData) -> StatusCallback:
    sid = _required(form, "MessageSid")
    if not _SID.fullmatch(sid):
        raise InvalidPayload("MessageSid is not a Twilio message sid")
    status = _required(form, "MessageStatus").lower()
    return StatusCallback(
        provider_id=sid,
        delivery=TWILIO_DELIVERY.get(status),
        error_code=form.get("ErrorCode", ""),
        error_message=form.get("ErrorMessage", "")[:500],
    )
