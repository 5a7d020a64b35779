"""Idempotency-Key on the agent API's POSTs that record something (replies, notes, macros).

A client that got no answer (a timeout, a 503 while Redis restarted, a dropped connection)
cannot know whether its reply was recorded; sent again with the same `Idempotency-Key`, the
request records nothing new and answers what the first one did. Keys are the client's own
(any 1-255 visible ASCII characters, a UUID is usual), scoped to the agent and the ticket,
remembered 24 hours. The same key with another request (route or body) is refused (422
`idempotency_key_reused`); while the first request is still running, 409
`idempotency_key_in_progress`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web

from bridge.core.tickets import Event
from bridge.store.tickets import Conflict, Idempotency, TicketStore
from bridge.web.auth import principal
from bridge.web.errors import bad_request, conflict_error

HEADER = "Idempotency-Key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def idempotency_of(request: web.Request, body: dict[str, Any]) -> Idempotency | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _KEY.fullmatch(raw):
        raise bad_request(f"{HEADER} must be 1-255 visible ASCII characters",
                          "invalid_idempotency_key")
    who = principal(request).name
    key_id = hashlib.sha256(f"{who}\n{raw}".encode()).hexdigest()[:32]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    request_id = json.dumps({"route": route, "params": dict(request.match_info),
                             "body": body}, sort_keys=True, ensure_ascii=False)
    return Idempotency(key_id=key_id,
                       fingerprint=hashlib.sha256(request_id.encode()).hexdigest()[:32])


async def replayed(store: TicketStore, ticket_id: str, idempotency: Idempotency | None
                   ) -> Event | None:
    """The event an earlier request with this Idempotency-Key recorded, if any: checked
    before the request's own checks, which the first request may have changed the answer
    to (a macro that ended the session). Raises ApiError and NotFound."""
    if idempotency is None:
        return None
    try:
        event_id = await store.replay(ticket_id, idempotency)
    except Conflict as exc:
        raise conflict_error(exc) from None
    return await store.get_event(ticket_id, event_id) if event_id else None
