"""Fixtures of the send job's tests: Twilio settings, a TwilioSender on them (twilio-python
through workers.twilio_client, httpx), and respx mocking Twilio's API, so that each test
sees the exact form the sender posts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from config.settings import Settings
from tests.conftest import make_settings
from tests.outbound.support import API
from workers.senders import TwilioSender


@pytest.fixture
def twilio_settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
async def sender(twilio_settings: Settings) -> AsyncIterator[TwilioSender]:
    s = TwilioSender(twilio_settings)
    yield s
    await s.aclose()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router
