"""How late the web process's event loop runs what is due: the process's own saturation
signal, told apart from Redis's latency and the network's.

Every request a web process holds waits behind whatever its loop is running: more traffic
than one process can take, a long synchronous call, a garbage collector pause, a machine
that gives the process no CPU (a virtual machine's steal). A request's latency
(bridge_http_request_seconds) cannot tell those from a slow Redis; this can. A probe
sleeps PROBE_INTERVAL_S and records how much later than that it woke up: about a
millisecond when the loop is free (the poller's timeout is whole milliseconds), the length
of the stall when it is not.

Twenty probes a second cost a few hundred microseconds of CPU a second. A stall shorter
than the interval is seen only when a probe falls due during it: a sample, not a log of
every stall.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bridge.web import metrics

PROBE_INTERVAL_S = 0.05


async def probe_loop_lag(observe: Callable[[float], None],
                         interval_s: float = PROBE_INTERVAL_S) -> None:
    """Forever: sleep interval_s, observe how late the wake-up came (seconds, ≥ 0)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - due))


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the probe runs as long as the app, into bridge_event_loop_lag_seconds."""
    probing = asyncio.create_task(probe_loop_lag(metrics.LOOP_LAG.observe),
                                  name="loop-lag-probe")
    yield
    probing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probing
