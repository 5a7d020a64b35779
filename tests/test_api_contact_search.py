"""GET /api/v1/tickets?contact=: agents search by the customer's phone number or contact id."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from bridge.core.messages import Channel, contact_id_for
from tests.conftest import AGENT_TOKEN, CONTACT_KEY
from tests.factories import inbound_form, post_signed

Client = TestClient[Any, Any]
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
CAMILLE = "whatsapp:+33612345678"
OTHER = "whatsapp:+33699999999"
BSUID = "whatsapp:US.13491208655302741918"


@pytest.fixture
async def client(client: Client) -> Client:
    """The shared client (tests/conftest.py), with these contacts' first messages routed."""
    for sender in (CAMILLE, OTHER, BSUID):
        form = inbound_form("Bonjour", sender=sender)
        assert (await post_signed(client, "/webhooks/twilio", form)).status == 200
    return client


async def found(client: Client, url: str) -> list[str]:
    """The contact addresses of the tickets a search lists."""
    response = await client.get(url, headers=AGENT)
    assert response.status == 200, await response.text()
    return [t["contact"]["address"] for t in (await response.json())["tickets"]]


async def test_search_by_contact_id(client: Client) -> None:
    listing = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    camille = next(t for t in listing["tickets"] if t["contact"]["address"] == CAMILLE)
    assert await found(client, f"/api/v1/tickets?contact={camille['contact']['id']}") == [CAMILLE]


async def test_search_by_whatsapp_address(client: Client) -> None:
    assert await found(client, "/api/v1/tickets?contact=whatsapp:%2B33612345678") == [CAMILLE]
    assert await found(client, f"/api/v1/tickets?contact={BSUID}") == [BSUID]


@pytest.mark.parametrize("query", [
    "%2B33612345678",                # the number alone means WhatsApp
    "+33612345678",                  # + unencoded: the query string makes it a space
    "whatsapp:+33612345678",
    "%2B33%206%2012%2034%2056%2078",  # pasted with spaces
    "%2B33-6-12-34-56-78",
    "%2B33%20(6)%2012.34.56.78",
], ids=["bare", "raw-plus", "whatsapp-raw-plus", "spaces", "dashes", "brackets-dots"])
async def test_search_by_bare_number(client: Client, query: str) -> None:
    assert await found(client, f"/api/v1/tickets?contact={query}") == [CAMILLE]


async def test_the_id_is_the_one_routing_uses(client: Client) -> None:
    """A search by number and one by contact_id_for's id list the same tickets."""
    routing_id = contact_id_for(CONTACT_KEY.encode(), Channel.WHATSAPP, CAMILLE)
    assert await found(client, f"/api/v1/tickets?contact={routing_id}") == [CAMILLE]


async def test_unknown_number_lists_nothing(client: Client) -> None:
    assert await found(client, "/api/v1/tickets?contact=%2B33600000000") == []
    assert await found(client, "/api/v1/tickets?contact=whatsapp:%2B14155550100") == []


@pytest.mark.parametrize("value", [
    "33612345678",            # no + nor country code marker: not an id either
    "%2B33abc",
    "%2B0612345678",          # E.164 numbers never start with 0
    "%2B1234567890123456",    # 16 digits, over E.164's 15
    "whatsapp:",
    "whatsapp:33612345678",
    "whatsapp:%2B",
    "whatsapp:us.123",
    "not%20an%20id",
    "short",
    "%2B",
])
async def test_a_malformed_contact_is_400_and_writes_nothing(
        client: Client, sync_redis: redis.Redis, value: str) -> None:
    keys_before = sorted(sync_redis.keys("*"))
    response = await client.get(f"/api/v1/tickets?contact={value}", headers=AGENT)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_contact"
    assert "whatsapp:+33612345678" in error["message"]
    assert sorted(sync_redis.keys("*")) == keys_before
