"""Signed Twilio inbound WhatsApp forms as complete HTTP requests, built before a load
phase starts (bench/loadgen.py sends them). No bridge imports: the load generator imports
this and must start fast."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import random
from typing import TYPE_CHECKING
from urllib.parse import quote_plus, urlencode

from bench.corpus import ACCOUNT_SID, BODIES, BUSINESS_NUMBER, NAMES, contact_address

if TYPE_CHECKING:
    from bench.loadspec import LoadSpec

TWILIO_PATH = "/webhooks/twilio"
MAX_CONTACTS = 88_000_000  # contact_address(i) has 8 digits after +336, from 12,000,000


def inbound_form(sid: str, contact: int, body: str) -> dict[str, str]:
    """The fields Twilio posts for an inbound WhatsApp text (as tests/factories.py)."""
    address = contact_address(contact)
    return {
        "SmsMessageSid": sid, "NumMedia": "0", "ProfileName": NAMES[contact % len(NAMES)],
        "MessageType": "text", "SmsSid": sid, "WaId": address.removeprefix("whatsapp:+"),
        "SmsStatus": "received", "Body": body, "To": BUSINESS_NUMBER, "NumSegments": "1",
        "ReferralNumMedia": "0", "MessageSid": sid, "AccountSid": ACCOUNT_SID,
        "From": address, "ApiVersion": "2010-04-01",
    }


# Every form has the same fields, so Twilio's signing order (parameter names sorted) is fixed.
_FORM_KEYS: tuple[str, ...] = tuple(sorted(inbound_form("SM" + "0" * 32, 0, "x")))


class Signer:
    """Twilio's webhook signature (HMAC-SHA1 of the URL followed by every parameter name
    and value, names sorted), with the URL part of the HMAC computed once. Checked against
    twilio-python's RequestValidator on a sample of every batch (see build_requests)."""

    def __init__(self, token: str, url: str) -> None:
        self._base = hmac.new(token.encode(), url.encode(), hashlib.sha1)

    def sign(self, form: dict[str, str]) -> str:
        mac = self._base.copy()
        mac.update("".join(k + form[k] for k in _FORM_KEYS).encode())
        return base64.b64encode(mac.digest()).decode()


@functools.lru_cache(maxsize=65536)
def _quote(value: str) -> str:
    return quote_plus(value)


def _urlencode(form: dict[str, str]) -> bytes:
    """urllib's urlencode with the (repeated) values' quoting cached."""
    return "&".join(
        k + "=" + (v if v.isascii() and v.isalnum() else _quote(v)) for k, v in form.items()
    ).encode()


def build_requests(spec: LoadSpec) -> list[bytes]:
    """`max_requests` complete HTTP requests, each a signed form with its own MessageSid."""
    if spec.new_contacts and spec.first_contact + spec.max_requests > MAX_CONTACTS:
        raise ValueError("contact numbers run out: the addresses have 8 digits")
    from twilio.request_validator import RequestValidator

    url = spec.public_base_url + spec.path
    signer = Signer(spec.token, url)
    reference = RequestValidator(spec.token)
    rng = random.Random(spec.seed)
    head = (
        f"POST {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
        "User-Agent: TwilioProxy/1.1\r\nAccept: */*\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
    ).encode()
    out: list[bytes] = []
    for i in range(spec.max_requests):
        sid = f"SM{spec.sid_prefix}{i:020x}"
        contact = spec.first_contact + i if spec.new_contacts else rng.randrange(spec.contacts)
        form = inbound_form(sid, contact, rng.choice(BODIES))
        signature = signer.sign(form)
        body = _urlencode(form)
        if i % 1000 == 0 and (signature != reference.compute_signature(url, form)
                              or body != urlencode(form).encode()):
            raise AssertionError("fast signer/encoder disagree with twilio/urllib")
        out.append(head + b"X-Twilio-Signature: " + signature.encode()
                   + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return out
