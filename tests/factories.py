"""Builders for signed Twilio requests (signed with twilio-python's own validator)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator

from tests.conftest import ACCOUNT_SID, AUTH_TOKEN

PUBLIC_BASE_URL = "https://bridge.example.com"


def new_sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


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
