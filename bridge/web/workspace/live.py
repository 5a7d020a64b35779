"""/app/live: server-sent events telling a page that what it shows has changed.

The page's views or thread subscribe to the process's LiveFeed (bridge/web/live.py) for
one ticket or for everything; each burst of changes becomes one `change` event naming the
tickets, and the page re-fetches its fragment (bridge/static/workspace.js). The events carry
no content: the fragment is read from the store with the viewer's session, so nothing is
missed or shown twice, and the page reads it again when it connects (changes made between
the page's render and the subscription are not lost).

Even ids say something (that a ticket exists, when it moves): a stream names only tickets its
viewer may read, with the role and groups they have at the time of each event, and ends once
the session no longer signs them in (signed out, token rotated, person removed), checked at
each event and keep-alive. A ticket moved out of the viewer's groups is no longer named, so
it leaves their list at the next refresh rather than at once.

When the process stops, every stream ends at once (LivePages): the browser's EventSource
connects again 2 s later (the `retry` the stream sets), to this process's successor or
another one. A stream left open would hold the process until aiohttp's shutdown timeout
(20 s in `bridge serve`), since a page that went away is noticed only at the next write."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from bridge.core.changes import Change
from bridge.core.teams import Access
from bridge.web.access import need, visible_to
from bridge.web.auth import Principal
from bridge.web.keys import live_feed_key, store_key
from bridge.web.live import Resync, Subscription
from bridge.web.session import load_session
from bridge.web.workspace.common import page

routes = web.RouteTableDef()

KEEPALIVE_S = 15.0


class LivePages:
    """This process's open /app/live streams, ended when it stops."""

    def __init__(self) -> None:
        self.open: set[Subscription] = set()
        self.stopping = False

    async def end_all(self, app: web.Application) -> None:
        """on_shutdown: each stream wakes, sees `stopping` and ends."""
        self.stopping = True
        for subscription in self.open:
            subscription.wake()


live_pages_key = web.AppKey("live_pages", LivePages)


def setup(app: web.Application) -> None:
    app[live_pages_key] = pages = LivePages()
    app.on_shutdown.append(pages.end_all)
    app.add_routes(routes)


@routes.get("/app/live")
@page()
async def live(request: web.Request, who: Principal) -> web.StreamResponse:
    ticket_id = request.query.get("ticket", "")
    if ticket_id:  # 404 for an unknown ticket, 403 for one the viewer may not read
        need(who, await request.app[store_key].get_ticket(ticket_id), Access.READ)
    # A stream asked for while stopping still opens, then ends at once: EventSource
    # connects again after an ended stream, never after an error status.
    feed, pages = request.app[live_feed_key], request.app[live_pages_key]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})
    async with feed.subscribe(ticket_ids=[ticket_id] if ticket_id else (),
                              everything=not ticket_id) as changes:
        # Subscribed before the page hears "open" and re-reads its fragment.
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        pages.open.add(changes)
        try:
            while not pages.stopping:
                try:
                    first = await asyncio.wait_for(changes.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    if await load_session(request) is None:
                        break
                    await response.write(b": keep-alive\n\n")
                    continue
                if pages.stopping:
                    break
                burst = [first, *changes.pending()]
                # Role and groups as they are now; no session, no more events.
                now_who = await load_session(request)
                if now_who is None:
                    break
                tickets = await _readable(request, now_who, burst)
                resync = any(isinstance(c, Resync) for c in burst)
                if not tickets and not resync:
                    continue  # only other groups' tickets changed
                data = json.dumps({"tickets": tickets, "resync": resync})
                await response.write(f"event: change\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            pass  # the page went away
        finally:
            pages.open.discard(changes)
    return response


async def _readable(request: web.Request, who: Principal, burst: list[Change | Resync]
                    ) -> list[str]:
    """The ids of the burst's tickets `who` may read (read again: the change carries no
    group, and a ticket's group may have changed since)."""
    ids = sorted({c.ticket_id for c in burst if not isinstance(c, Resync)})
    keep = visible_to(who)
    if keep is None or not ids:
        return ids
    tickets = await request.app[store_key].get_tickets(ids)
    return sorted(t.id for t in tickets if keep(t))
