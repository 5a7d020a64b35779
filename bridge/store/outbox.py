"""The local outbox: where outbound messages go when no Twilio credentials are set.

An append-only Redis stream, read newest first by `bridge outbox` and the admin pages, so a
newcomer sees the whole loop (customer message -> ticket -> agent reply -> "sent") without a
Twilio account. Each entry gets a sequence number n; its provider id is `OUTBOX-<n>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bridge.store.keys import PREFIX
from bridge.store.scripts import Script

# Both keys share one hash tag so the append script stays in one Redis Cluster slot.
OUTBOX_STREAM = f"{PREFIX}:{{outbox}}:messages"
OUTBOX_SEQ = f"{PREFIX}:{{outbox}}:seq"
# A development aid, not an archive: keep roughly the newest 10,000 messages.
DEFAULT_MAX_LEN = 10_000
PROVIDER_PREFIX = "OUTBOX-"

# INCR and XADD in one step, so numbers follow stream order and no number is lost.
_APPEND = """
local n = redis.call('INCR', KEYS[1])
local fields = {'n', n}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
return {n, id}
"""


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, kw_only=True)
class OutboxEntry:
    n: int
    stream_id: str
    at_ms: int
    to: str
    sender: str = ""
    body: str = ""
    content_sid: str = ""
    content_variables: dict[str, Any] = field(default_factory=dict)
    media_urls: tuple[str, ...] = ()
    ticket_id: str = ""
    event_id: str = ""

    @property
    def provider_id(self) -> str:
        return f"{PROVIDER_PREFIX}{self.n}"

    def summary(self) -> str:
        """One line for tables: the text, or the template and its variables."""
        if self.content_sid:
            variables = json.dumps(self.content_variables, ensure_ascii=False)
            text = f"[template {self.content_sid} {variables}]"
            return f"{text} {self.body}" if self.body else text
        media = f" [+{len(self.media_urls)} media]" if self.media_urls else ""
        return self.body + media

    @classmethod
    def from_stream(cls, stream_id: str, fields: dict[str, str]) -> OutboxEntry:
        return cls(
            n=int(fields.get("n") or 0),
            stream_id=stream_id,
            at_ms=int(fields.get("at_ms") or 0),
            to=fields.get("to", ""),
            sender=fields.get("sender", ""),
            body=fields.get("body", ""),
            content_sid=fields.get("content_sid", ""),
            content_variables=json.loads(fields.get("content_variables") or "{}"),
            media_urls=tuple(json.loads(fields.get("media_urls") or "[]")),
            ticket_id=fields.get("ticket_id", ""),
            event_id=fields.get("event_id", ""),
        )


class Outbox:
    """Async, like the rest of the store: the worker, the CLI (asyncio.run) and the admin
    pages share it."""

    def __init__(self, redis: Redis, *, max_len: int = DEFAULT_MAX_LEN) -> None:
        self.redis = redis
        self.max_len = max_len
        self._append = Script(redis, _APPEND)

    async def append(
        self,
        *,
        to: str,
        at_ms: int,
        sender: str = "",
        body: str = "",
        content_sid: str = "",
        content_variables: dict[str, Any] | None = None,
        media_urls: tuple[str, ...] | list[str] = (),
        ticket_id: str = "",
        event_id: str = "",
    ) -> OutboxEntry:
        fields = {
            "at_ms": str(at_ms),
            "to": to,
            "sender": sender,
            "body": body,
            "content_sid": content_sid,
            "content_variables": json.dumps(content_variables or {}, ensure_ascii=False),
            "media_urls": json.dumps(list(media_urls)),
            "ticket_id": ticket_id,
            "event_id": event_id,
        }
        args: list[str] = [str(self.max_len)]
        for name, value in fields.items():
            args += [name, value]
        n, stream_id = await self._append(keys=[OUTBOX_SEQ, OUTBOX_STREAM], args=args)
        return OutboxEntry.from_stream(_s(stream_id), {"n": str(n), **fields})

    async def latest(self, limit: int = 20, *, before: str | None = None) -> list[OutboxEntry]:
        """Newest first; `before` is the stream id of the last entry of the previous page."""
        upper = f"({before}" if before else "+"
        raw = await self.redis.xrevrange(OUTBOX_STREAM, upper, "-", count=limit)
        return [
            OutboxEntry.from_stream(_s(sid), {_s(k): _s(v) for k, v in f.items()})
            for sid, f in raw
        ]

    async def count(self) -> int:
        return int(await self.redis.xlen(OUTBOX_STREAM))
