"""bridge_event_loop_lag_seconds: how late the web process's loop wakes a probe."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.web.loop_lag import probe_loop_lag
from config.settings import Settings
from tests.test_metrics_queues import SCRAPER, _samples

Client = TestClient[Any, Any]


async def _probing(interval_s: float, while_running: Any) -> list[float]:
    lags: list[float] = []
    probe = asyncio.create_task(probe_loop_lag(lags.append, interval_s))
    try:
        await while_running(lags)
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    return lags


async def test_a_loop_held_up_shows_as_lag_at_least_as_long_as_the_hold_up() -> None:
    async def hold_the_loop(lags: list[float]) -> None:
        while len(lags) < 3:  # the probe runs
            await asyncio.sleep(0.01)
        time.sleep(0.3)  # a blocking call: nothing else runs meanwhile
        seen = len(lags)
        while len(lags) == seen:
            await asyncio.sleep(0.01)

    lags = await _probing(0.01, hold_the_loop)
    # The probe due within 10 ms of the hold-up's start woke after it ended.
    assert max(lags) >= 0.29
    assert min(lags) >= 0.0
    assert sum(1 for lag in lags if lag >= 0.29) == 1  # one hold-up, one late wake-up


async def test_a_free_loop_shows_no_probe_as_late_as_a_hold_up() -> None:
    async def idle(lags: list[float]) -> None:
        while len(lags) < 5:
            await asyncio.sleep(0.01)

    lags = await _probing(0.01, idle)
    assert len(lags) >= 5
    assert all(0.0 <= lag < 0.29 for lag in lags)


async def test_metrics_show_the_probes_of_a_running_app(
        aiohttp_client: Any, settings: Settings) -> None:
    client: Client = await aiohttp_client(create_app(settings))

    async def probes() -> float:
        text = await (await client.get("/metrics", headers=SCRAPER)).text()
        return _samples(text, "bridge_event_loop_lag_seconds_count").get("", 0.0)

    before = await probes()
    for _ in range(200):  # a probe every 50 ms: some within 10 s, on any machine
        await asyncio.sleep(0.05)
        if await probes() > before:
            break
    text = await (await client.get("/metrics", headers=SCRAPER)).text()
    count = _samples(text, "bridge_event_loop_lag_seconds_count")[""]
    buckets = _samples(text, "bridge_event_loop_lag_seconds_bucket")
    assert count > before
    assert buckets['{le="+Inf"}'] == count
    assert buckets['{le="10.0"}'] == count  # nothing held this loop up for 10 s
