"""The real app behind a real TCP socket, for clients that are not aiohttp's test client:
a browser (tests/browser), schemathesis (tests/hostile)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from bridge.app import create_app
from config.settings import Settings


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """The real app behind a real TCP socket on 127.0.0.1 (a free port), served by its own
    event loop in a background thread; yields the base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings), access_log=None)
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="hostile-live-server", daemon=True)
    thread.start()
    if not ready.wait(20):
        raise RuntimeError("live server did not start")
    if failure:
        raise RuntimeError("live server failed to start") from failure[0]
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        # Stopping takes well under a second; a handler left open holds runner.cleanup()
        # until aiohttp's shutdown timeout (an /app/live stream once held it 14-30 s a test).
        thread.join(15)
        if thread.is_alive():
            raise RuntimeError("the live server did not stop within 15 s; what it was still "
                               "running:\n" + _pending(loop))


def _pending(loop: asyncio.AbstractEventLoop) -> str:
    """The stacks of the server loop's tasks (read from this thread: a diagnosis, racy)."""
    lines = []
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed while being read
        return "(tasks changing)"
    for task in tasks:
        lines.append(f"- {task.get_name()}: {task.get_coro()!r}")
        for frame in task.get_stack(limit=8):
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} "
                         f"{frame.f_code.co_name}")
    return "\n".join(lines) or "(no task)"
