"""Helpers for the hostile-input suite: Redis snapshots, signed posts, a live server
(tests/live_server.py).

"Nothing written" is checked against a snapshot of every key and its DUMPed value, so a
write that only changes an existing key (an appended stream entry, a hash field) shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

import redis
from multidict import MultiDict

from bridge.store import keys
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.factories import sign
from tests.live_server import live_server

FORM_TYPE = "application/x-www-form-urlencoded"
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

__all__ = ["live_server"]

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

