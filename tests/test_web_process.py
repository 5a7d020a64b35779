"""The web process's heap policy (bridge/web/heap.py): `bridge serve`'s app keeps the
survivors of full collections frozen, so later full collections walk only what is new;
cyclic garbage among frozen objects is freed by the periodic full sweep; apps built in
tests leave the collector alone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.app import create_app
from bridge.web.heap import YOUNG_COLLECTION_THRESHOLD, SurvivorFreezer, full_sweep
from config.settings import Settings


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone."""
    callbacks = list(gc.callbacks)
    gc.unfreeze()
    yield
    gc.callbacks[:] = callbacks
    gc.unfreeze()


@pytest.fixture
def thresholds() -> Iterator[tuple[int, ...]]:
    """The collector's thresholds as the test found them, restored afterwards."""
    found = gc.get_threshold()
    yield found
    gc.set_threshold(*found)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


async def test_the_served_app_freezes_its_heap_and_stops_on_cleanup(
        aiohttp_client: Any, settings: Settings, collector: None) -> None:
    before = list(gc.callbacks)
    client = await aiohttp_client(create_app(settings, freeze_heap=True))  # started up
    assert gc.get_freeze_count() > 10_000
    assert any(isinstance(cb, SurvivorFreezer) for cb in gc.callbacks)
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    assert (await client.get("/healthz")).status == 200
    await client.close()
    assert gc.callbacks == before
    assert gc.get_threshold()[0] != YOUNG_COLLECTION_THRESHOLD  # the process's own again


async def test_an_app_built_for_a_test_leaves_the_collector_alone(
        aiohttp_client: Any, settings: Settings, collector: None,
        thresholds: tuple[int, ...]) -> None:
    await aiohttp_client(create_app(settings))
    assert gc.get_freeze_count() == 0
    assert not any(isinstance(cb, SurvivorFreezer) for cb in gc.callbacks)
    assert gc.get_threshold() == thresholds


def test_the_raised_young_threshold_still_collects_cycles_on_its_own(
        thresholds: tuple[int, ...]) -> None:
    """No explicit collect: allocations past the threshold set the collector off."""
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    gc.collect()  # the count starts from zero
    garbage = weakref.ref(_cycle())
    held: list[list[int]] = [[] for _ in range(YOUNG_COLLECTION_THRESHOLD // 2)]
    assert garbage() is not None  # below the threshold: still there
    held += [[] for _ in range(YOUNG_COLLECTION_THRESHOLD)]
    assert garbage() is None
    assert len(held) > YOUNG_COLLECTION_THRESHOLD


def test_survivors_of_a_full_collection_are_frozen(collector: None) -> None:
    freezer = SurvivorFreezer()
    gc.callbacks.append(freezer)
    kept = [Node() for _ in range(1000)]
    gc.collect(1)  # a younger collection freezes nothing
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert freezer.freezes == 1
    assert gc.get_freeze_count() >= len(kept)


def test_a_cycle_frozen_then_dropped_is_freed_by_the_full_sweep(collector: None) -> None:
    gc.callbacks.append(SurvivorFreezer())
    held = _cycle()  # alive through the full collection: frozen with the rest
    survivor = weakref.ref(held)
    gc.collect()
    del held
    gc.collect()
    assert survivor() is not None  # frozen garbage waits for the sweep
    full_sweep()
    assert survivor() is None
    young = weakref.ref(_cycle())  # never frozen: the ordinary collector frees it
    gc.collect()
    assert young() is None
