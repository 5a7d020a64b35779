"""/app/live: server-sent events telling a page that what it shows has changed.

The page's views or thread subscribe to the process's LiveFeed (bridge/web/live.py) for
one ticket or for everything; each burst of changes becomes one `change` event naming the
tickets, and the page re-fetches its fragment (bridge/static/workspace.js). The events carry
no content: the fragment is read from the store with the viewer's session, so nothing is
missed or shown twice, and the page reads it again when it connects (changes made between
the page's render and the subscription are not lost)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from bridge.web.auth import Principal
from bridge.web.keys import live_feed_key, store_key
from bridge.web.live import Resync
from bridge.web.workspace.common import page

routes = web.RouteTableDef()

KEEPALIVE_S = 15.0


@routes.get("/app/live")
@page()
async def live(request: web.Request, who: Principal) -> web.StreamResponse:
    ticket_id = request.query.get("ticket", "")
    if ticket_id:
        await request.app[store_key].get_ticket(ticket_id)  # 404 for an unknown ticket
    feed = request.app[live_feed_key]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})
    async with feed.subscribe(ticket_ids=[ticket_id] if ticket_id else (),
                              everything=not ticket_id) as changes:
        # Subscribed before the page hears "open" and re-reads its fragment.
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        try:
            while True:
                try:
                    first = await asyncio.wait_for(changes.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                burst = [first, *changes.pending()]
                tickets = sorted({c.ticket_id for c in burst if not isinstance(c, Resync)})
                data = json.dumps({"tickets": tickets,
                                   "resync": any(isinstance(c, Resync) for c in burst)})
                await response.write(f"event: change\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            pass  # the page went away
    return response
