"""Contact ids are keyed (security review, issue 8, finding 3): without BRIDGE_CONTACT_KEY an
id seen in a log or a URL does not lead back to the phone number."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.core.messages import Channel, contact_id_for
from bridge.store import keys
from tests.conftest import make_settings
from tests.factories import inbound_form, post_signed

NUMBER = "+33612345678"
ADDRESS = f"whatsapp:{NUMBER}"


def unkeyed_id(channel: str, address: str) -> str:
    """What earlier versions used (reversed in ~5,700 guesses for one number prefix)."""
    return hashlib.sha256(f"{channel}\x00{address}".encode()).hexdigest()[:16]


def test_the_id_depends_on_the_key_and_is_stable_for_one_key() -> None:
    one = contact_id_for(b"k" * 32, Channel.WHATSAPP, ADDRESS)
    assert one == contact_id_for(b"k" * 32, Channel.WHATSAPP, ADDRESS)
    assert one != contact_id_for(b"j" * 32, Channel.WHATSAPP, ADDRESS)
    assert one != contact_id_for(b"k" * 32, Channel.WIDGET, ADDRESS)
    assert len(one) == 16 and int(one, 16) >= 0  # still a short hex hash tag


def test_the_id_is_the_keyed_hmac_every_time() -> None:
    """Ids are cached per (key, channel, address): a second call, with the channel as an
    enum or as its value, still gives the HMAC itself."""
    expected = hmac.new(b"k" * 32, f"whatsapp\x00{ADDRESS}".encode(),
                        hashlib.sha256).hexdigest()[:16]
    for channel in (Channel.WHATSAPP, "whatsapp", Channel.WHATSAPP):
        assert contact_id_for(b"k" * 32, channel, ADDRESS) == expected


def test_routing_names_the_keys_the_rest_of_the_store_uses() -> None:
    cid = contact_id_for(b"k" * 32, Channel.WHATSAPP, ADDRESS)
    assert keys.routing_keys(cid) == (keys.contact_prefix(cid), keys.contact(cid),
                                      keys.seen(cid), keys.change_log_of(cid))


def test_the_id_is_not_the_unkeyed_hash_and_a_key_is_required() -> None:
    keyed = contact_id_for(b"k" * 32, Channel.WHATSAPP, ADDRESS)
    assert keyed != unkeyed_id("whatsapp", ADDRESS)
    with pytest.raises(ValueError, match="key"):
        contact_id_for(b"", Channel.WHATSAPP, ADDRESS)


async def test_no_log_line_carries_the_number_or_an_unkeyed_id(
        aiohttp_client: Any, redis_url: str, sync_redis: redis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(redis_url)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    caplog.set_level(logging.DEBUG)
    response = await post_signed(client, "/webhooks/twilio", inbound_form("Bonjour",
                                                                          sender=ADDRESS))
    assert response.status == 200
    # Every level: a new ticket is logged at debug (webhooks.py), and debug logs get
    # turned on in production too when something goes wrong.
    lines = [r.getMessage() for r in caplog.records]
    assert any("inbound" in line for line in lines)  # the webhook was logged
    digits = NUMBER.lstrip("+")
    for line in lines:
        assert digits not in line and digits[-9:] not in line
        assert unkeyed_id("whatsapp", ADDRESS) not in line
    # The id it logs is the keyed one, which the key alone turns back into the number.
    keyed = contact_id_for(settings.contact_key_bytes, Channel.WHATSAPP, ADDRESS)
    assert any(f"contact={keyed}" in line for line in lines)

