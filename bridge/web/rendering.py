"""The web process's render gate: macro rendering on its own bounded executor.

Rendering a macro blocks a thread for as long as its helper process renders (up to the
request's render budget). On the loop's default executor those threads would be the ones
webhooks wait for (enqueueing RQ jobs, Twilio calls), so a few slow previews delayed every
new-contact webhook. Here rendering has its own `ThreadPoolExecutor` of
`render_workers` threads, and admission is decided up front, on the event loop:

* at most `render_workers + render_queue` renders are admitted at once; the next one is
  answered at once with 503 `busy` and `Retry-After` (never queued without bound);
* at most `render_per_user` of them per user on the authoring paths (preview, validate,
  save, rollback): the next one is 429 `too_many_renders` with `Retry-After`. 429 because
  it is that user's own rate; 503 because the whole process is full.

A slot is freed when the render thread finishes, not when the request ends: a client that
hangs up does not free a thread that is still rendering.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from aiohttp import web

from bridge.templating import RenderResult, RenderRunner
from bridge.web.errors import ApiError
from bridge.web.keys import settings_key

T = TypeVar("T")

# Seconds a refused client is told to wait: about one render (the per-template limit).
RETRY_AFTER_S = 2


def busy() -> ApiError:
    return ApiError(503, "busy", "every template renderer is busy; retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def too_many_renders(user: str, limit: int) -> ApiError:
    return ApiError(429, "too_many_renders",
                    f"{user} already has {limit} template renders running; wait for them",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


class RenderGate:
    """A bounded executor for rendering, with global and per-user admission."""

    def __init__(self, *, workers: int, queue: int, per_user: int) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="render")
        self.capacity = workers + queue
        self.per_user = per_user
        self.in_flight = 0
        self.by_user: dict[str, int] = {}

    def check(self, user: str | None = None) -> None:
        """Refuse early (before the body is read and parsed) when a render by `user` would
        be refused now; `run` decides for good. On the event loop thread only."""
        if user is not None and self.by_user.get(user, 0) >= self.per_user:
            raise too_many_renders(user, self.per_user)
        if self.in_flight >= self.capacity:
            raise busy()

    def _admit(self, user: str | None) -> None:
        self.check(user)
        self.in_flight += 1
        if user is not None:
            self.by_user[user] = self.by_user.get(user, 0) + 1

    def _release(self, user: str | None) -> None:
        self.in_flight -= 1
        if user is not None:
            left = self.by_user.get(user, 0) - 1
            if left > 0:
                self.by_user[user] = left
            else:
                self.by_user.pop(user, None)

    async def run(self, fn: Callable[[], T], *, user: str | None = None) -> T:
        """Run `fn` on a render thread; raises the 503 / 429 ApiError when full."""
        self._admit(user)
        loop = asyncio.get_running_loop()
        try:
            future = self.executor.submit(fn)
        except BaseException:
            self._release(user)
            raise

        def done(_: concurrent.futures.Future[T]) -> None:
            # A closed loop raises RuntimeError: nobody is left to admit then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._release, user)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def runner(self, user: str | None = None) -> RenderRunner:
        """What `arender_all(run=...)` takes: renders through this gate as `user`."""
        async def run(job: Callable[[], RenderResult]) -> RenderResult:
            return await self.run(job, user=user)
        return run

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


render_gate_key = web.AppKey("render_gate", RenderGate)


async def render_gate_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the gate lives as long as the app."""
    settings = app[settings_key]
    gate = RenderGate(workers=settings.render_workers, queue=settings.render_queue,
                      per_user=settings.render_per_user)
    app[render_gate_key] = gate
    yield
    gate.close()
