"""What the ticket store's parts share: its errors, the idempotency types, decoding helpers and
the base that holds the Redis client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.store.claims import Claims
from bridge.store.pipelining import AutoPipeline

# WhatsApp's customer-service window.
SERVICE_WINDOW_S = 24 * 3600


MAX_PAGE = 200


class NotFound(LookupError):
    pass


# How long a client's Idempotency-Key is remembered (Stripe keeps them 24 hours too).
IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Idempotency:
    """A client's key for one change (`key_id`: a digest of the key, safe in a Redis key
    name) and a digest of the request it came with: the same key with another request is
    refused rather than answered with the first one's result."""

    key_id: str
    fingerprint: str


class Replayed(Exception):
    """update_ticket found the change of its Idempotency-Key already made: nothing was
    written; `event_id` is what the earlier request recorded ("" for no event)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


class Conflict(Exception):
    """The request is valid but the ticket's state refuses it (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _decode_map(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


async def read_hashes(commands: AutoPipeline, hash_keys: Sequence[str]
                      ) -> list[dict[str, str]]:
    """Whole hashes ({} for a missing one) in one round trip shared with the other calls
    of this loop iteration, parsed as hiredis gives them: about half the CPU time of a
    redis-py pipeline of HGETALLs (its per-command path and reply callbacks), which the
    change log's consumers pay for every ticket of every batch."""
    if not hash_keys:
        return []
    out: list[dict[str, str]] = []
    for reply in await commands.checked([("HGETALL", key) for key in hash_keys]):
        if isinstance(reply, dict):  # RESP3
            out.append(_decode_map(reply))
        else:
            pairs = iter(reply)
            out.append({_s(k): _s(v) for k, v in zip(pairs, pairs, strict=True)})
    return out



class StoreBase:
    """The Redis client and what every part of the ticket store uses."""

    def __init__(self, redis: Redis, *, contact_key: bytes = b"",
                 dedupe_ttl_s: int = 7 * 24 * 3600) -> None:
        self.redis = redis
        self.claims = Claims(redis)
        self._commands = AutoPipeline(redis)
        # Only routing needs it (a contact's id from its address); readers get ids from
        # tickets and URLs.
        self.contact_key = contact_key
        self.dedupe_ttl_s = dedupe_ttl_s
