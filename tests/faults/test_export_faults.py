"""The webhook export under faults: `python -m workers.export` SIGKILLed while a delivery is
in flight; the next sender delivers it again with the same webhook-id, and the rest in order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio
from aiohttp import web

from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import NewDelivery, append
from tests.export_support import Receiver, receiving
from tests.faults.workers_support import WorkerProcess, worker_env


async def _wait_for(check: object, what: str, timeout_s: float,
                    workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        for worker in workers:
            assert worker.alive(), f"export exited while waiting for {what}:\n{worker.output()}"
        await asyncio.sleep(0.05)
    logs = "\n".join(w.output()[-3000:] for w in workers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


async def test_a_sender_killed_mid_delivery_is_followed_by_a_retry_with_the_same_id(
        redis_url: str, aredis: redis.asyncio.Redis, tmp_path: Path) -> None:
    in_flight: list[str] = []
    release = asyncio.Event()

    class Hanging(Receiver):
        async def handle(self, request: web.Request) -> web.Response:
            if not release.is_set():  # the first process never gets an answer
                in_flight.append(request.headers["webhook-id"])
                await release.wait()  # the sender is dead by then
                return web.Response(status=503)
            return await super().handle(request)

    async with receiving(Hanging()) as receiver:
        endpoint, secret = await EndpointStore(aredis).create(
            url=receiver.url, events=("*",), now_ms=int(time.time() * 1000))
        receiver.secrets = [secret]
        await append(aredis, [NewDelivery(endpoint.id, f"evt_{n}", "1", "note.added",
                                          f'{{"n": {n}}}', n) for n in range(5)])
        env = worker_env(redis_url, tmp_path, BRIDGE_ENV="development",
                         BRIDGE_EXPORT_ALLOW_PRIVATE="1", BRIDGE_RELAY_LEASE_TTL_S="2")
        first = WorkerProcess(env, tmp_path / "export.log", module="workers.export")
        try:
            await _wait_for(lambda: bool(in_flight), "a delivery in flight", 30, [first])
            await asyncio.to_thread(first.kill_tree)
        finally:
            first.close()
        release.set()
        second = WorkerProcess(env, tmp_path / "export.log", module="workers.export",
                               append=True)
        try:
            await _wait_for(lambda: len(receiver.received) >= 5, "every delivery", 60,
                            [second])
        finally:
            second.stop()
            second.close()
    assert in_flight == ["evt_0"]
    # The delivery cut off by the kill comes again, with its id, and the rest in order.
    assert receiver.ids() == [f"evt_{n}" for n in range(5)]
    assert receiver.unverified == []
