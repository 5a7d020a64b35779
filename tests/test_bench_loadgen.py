"""The load generator against a local server that misbehaves on purpose: every request is
tallied once (answered, refused, timed out or cut off), a broken connection is replaced,
and both loops end on time whatever the server does. No timing is asserted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web

from bench.loadgen import LoadResult, LoadSpec, run_async


def _requests(n: int) -> list[bytes]:
    return [f"POST /load HTTP/1.1\r\nHost: t\r\nX-N: {i}\r\nContent-Length: 0\r\n\r\n".encode()
            for i in range(n)]


def _spec(port: int, mode: Literal["closed", "open"], **kw: Any) -> LoadSpec:
    return LoadSpec(port=port, mode=mode, token="t" * 32, public_base_url="http://t",
                    sid_prefix="0" * 12, **kw)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(aiohttp_server: Any, handler: Handler) -> int:
    app = web.Application()
    app.router.add_post("/load", handler)
    server = await aiohttp_server(app)
    return int(server.port)


async def test_closed_loop_tallies_answers_refusals_timeouts_and_cut_connections(
    aiohttp_server: Any,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        n = int(request.headers["X-N"])
        if n % 10 == 3:
            return web.Response(status=503, text="busy")
        if n % 50 == 7:  # never answered: the generator's timeout
            await asyncio.sleep(30)
        if n % 50 == 9:  # the connection cut mid-request
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(1)
        return web.Response(text="ok")

    port = await _serve(aiohttp_server, handler)
    reqs = _requests(400)
    result: LoadResult = await run_async(
        _spec(port, "closed", concurrency=4, duration_s=30.0, max_requests=len(reqs),
              timeout_s=0.3), reqs, 0.0)
    # The pool of 400 ran out long before 30 s: every request was sent once and has one
    # outcome.
    assert result.pool_exhausted
    assert result.sent == len(reqs)
    timeouts = result.failures.get("timeout", 0)
    cut = sum(n for kind, n in result.failures.items() if kind != "timeout")
    assert result.statuses == {"503": 40}
    assert timeouts == 8 and cut == 8
    assert result.ok == len(reqs) - 40 - 16
    assert result.window_ok == result.ok and result.latency_ms["p99"] > 0
    assert result.window_errors == 40 + 16


async def test_closed_loop_stops_sending_at_the_end_of_its_window(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.01)
        return web.Response(text="ok")

    port = await _serve(aiohttp_server, handler)
    reqs = _requests(100_000)
    result = await run_async(_spec(port, "closed", concurrency=2, duration_s=0.3,
                                   warmup_s=0.1, max_requests=len(reqs)), reqs, 0.0)
    assert not result.pool_exhausted
    assert 0 < result.sent < 1000  # 2 connections of 10 ms answers for 0.4 s
    assert result.ok == result.sent and result.errors == 0
    assert 0 < result.window_ok < result.ok  # the warm-up's answers are not counted


async def test_open_loop_sends_every_scheduled_request_once(aiohttp_server: Any) -> None:
    seen: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(int(request.headers["X-N"]))
        return web.Response(text="ok")

    port = await _serve(aiohttp_server, handler)
    reqs = _requests(100)
    result = await run_async(_spec(port, "open", concurrency=3, rate=200.0, duration_s=0.5,
                                   max_requests=len(reqs)), reqs, 0.0)
    assert sorted(seen) == list(range(100))
    assert result.ok == result.window_ok == 100 and result.errors == 0
    assert result.latency_ms["p50"] > 0


async def test_open_loop_against_a_server_that_never_answers_ends_and_reports_it(
    aiohttp_server: Any,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(text="late")

    port = await _serve(aiohttp_server, handler)
    reqs = _requests(40)
    result = await run_async(_spec(port, "open", concurrency=2, rate=100.0, duration_s=0.4,
                                   max_requests=len(reqs), timeout_s=0.3), reqs, 0.0)
    assert result.ok == 0
    # Each request either timed out on a connection or waited past the deadline for one.
    assert result.failures.get("timeout", 0) + result.dropped == 40
    assert result.errors == 40


async def test_a_connection_replaced_after_the_end_still_ends_the_phase(
    aiohttp_server: Any,
) -> None:
    """The last thing a phase waits for can be a replacement that connects once nothing
    is left to send (found by review: the phase then never ended)."""
    import time

    from bench.loadclient import _ClosedLoop

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    port = await _serve(aiohttp_server, handler)
    reqs = _requests(10)
    driver = _ClosedLoop(_spec(port, "closed", concurrency=1, duration_s=1.0,
                               max_requests=len(reqs)), reqs)
    await driver.start()
    assert driver.done is not None
    real_connect = driver._connect

    async def slow_connect() -> Any:
        await asyncio.sleep(0.2)  # the phase's end passes meanwhile
        return await real_connect()

    driver._connect = slow_connect  # type: ignore[method-assign]
    driver.end = time.perf_counter() + 0.05
    driver.replace(driver.conns[0])
    await asyncio.wait_for(driver.done, 5)
    driver.close()
