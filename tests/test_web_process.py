"""The web process's own tuning: `bridge serve`'s app moves its start-up heap out of the
garbage collector's reach (full collections no longer walk it); apps built in tests do not."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.app import create_app
from config.settings import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_the_served_app_freezes_what_it_started_with(
        aiohttp_client: Any, settings: Settings, unfrozen: None) -> None:
    client = await aiohttp_client(create_app(settings, freeze_heap=True))  # started up
    assert gc.get_freeze_count() > 10_000
    assert (await client.get("/healthz")).status == 200


async def test_an_app_built_for_a_test_leaves_the_heap_alone(
        aiohttp_client: Any, settings: Settings, unfrozen: None) -> None:
    await aiohttp_client(create_app(settings))
    assert gc.get_freeze_count() == 0
