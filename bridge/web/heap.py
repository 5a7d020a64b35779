"""The web process's heap and CPython's cyclic garbage collector.

A full collection (generation 2) walks every object the process holds, and answers nothing
meanwhile. Measured with gc.callbacks during `make bench`: ~63,000 objects alive after
start-up cost 55-75 ms per full collection under webhook load; with 5,000 widget visitors
connected (each socket a few hundred objects) one lasted 0.4-0.6 s, and CPython runs one
whenever the survivors of younger collections reach a quarter of the old generation, so
every ~10 s while visitors arrive: those pauses set the reply fan-out's p99.

So the web process keeps what has survived a full collection out of the collector's reach
(gc.freeze): the start-up heap once started, then the survivors of each full collection,
which are mostly long-lived (sockets, pools, caches). Later full collections walk only what
is new since. The cost: a reference cycle among frozen objects (a socket that closed) is
not collected while frozen; freed by reference counting, most objects never need the
collector. Every FULL_SWEEP_INTERVAL_S the process unfreezes and runs one full collection,
so such garbage lives at most that long: one full pause per interval instead of one every
few seconds. The youngest generation waits for more objects than CPython's default before
it is collected (YOUNG_COLLECTION_THRESHOLD), so that requests in flight do not set it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

FULL_SWEEP_INTERVAL_S = 600.0
# The youngest generation is collected when the container objects allocated and not yet
# freed since its last collection exceed this (CPython's default: 700). A webhook allocates
# a few hundred that live only while it is in flight, so 64 requests in flight crossed 700
# every ~50 requests, and each collection walked every in-flight request's objects (~0.4
# ms): 4.9% of the web process's CPU under webhook load (measured with gc.callbacks,
# appends at ~5,000/s). At 10,000 the in-flight peak stays below it and the young
# collector runs for cyclic garbage only (a closed connection leaves a few objects in
# a cycle): it holds at most ~10,000 such objects, a few MB.
YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_now() -> None:
    """Collect, then freeze every survivor."""
    gc.collect()
    gc.freeze()


def full_sweep() -> None:
    """Look at everything once (frozen garbage included), then freeze the survivors."""
    gc.unfreeze()
    freeze_now()


class SurvivorFreezer:
    """A gc callback: after each full collection, freeze its survivors."""

    def __init__(self) -> None:
        self.freezes = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()
            self.freezes += 1


async def _sweep_every(interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        full_sweep()


def heap_freezing_ctx(interval_s: float = FULL_SWEEP_INTERVAL_S
                      ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the web process's own app (never a test's: it changes the
    whole process's collector)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        freezer = SurvivorFreezer()
        freeze_now()  # the start-up heap
        gc.callbacks.append(freezer)
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
        sweeping = asyncio.create_task(_sweep_every(interval_s), name="gc-full-sweep")
        try:
            yield
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            gc.callbacks.remove(freezer)
            gc.set_threshold(*thresholds)

    return ctx
