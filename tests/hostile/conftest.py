"""Helpers for the hostile-input suite: Redis snapshots, signed posts, a live server.

"Nothing written" is checked against a snapshot of every key and its DUMPed value, so a
write that only changes an existing key (an appended stream entry, a hash field) shows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import redis
from aiohttp import web
from multidict import MultiDict

from bridge.app import create_app
from bridge.store import keys
from config.settings import Settings
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.factories import sign

FORM_TYPE = "application/x-www-form-urlencoded"
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

Snapshot = dict[bytes, bytes | None]


def snapshot(client: redis.Redis) -> Snapshot:
    """Every key with its serialized value (TTLs left out: they move with the clock)."""
    keys = sorted(client.scan_iter(count=1000))
    if not keys:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.dump(key)
        return dict(zip(keys, pipe.execute(), strict=True))


def customer_messages(client: redis.Redis) -> int:
    """customer_message events stored across every ticket thread."""
    total = 0
    for key in client.scan_iter(match=keys.EVENT_STREAMS_GLOB, count=1000):
        total += sum(1 for _, fields in client.xrange(key)
                     if fields.get(b"type") == b"customer_message")
    return total


def signed_request(path: str, pairs: Iterable[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """The exact urlencoded body and headers Twilio would send for these pairs (repeated
    names included: the signature covers every distinct value)."""
    pairs = list(pairs)
    signature = sign(path, MultiDict(pairs))  # type: ignore[arg-type]
    return urlencode(pairs), {"Content-Type": FORM_TYPE, "X-Twilio-Signature": signature}


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
        thread.join(30)
