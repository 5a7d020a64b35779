"""Real time for widget visitors: a WebSocket, and long polling where a proxy refuses
WebSockets. Both resume from the visitor's own cursor (the last event key it saw).

The change log says "this contact's ticket changed" (the LiveFeed, one subscription per
process, tails the shared log, so a reply recorded through any process reaches visitors
connected to every process); a connection then reads the thread after its cursor from
the store. Nothing is pushed from memory, so a reconnect, a restarted process or a
second process lose nothing; a connection remembers the keys it sent lately, and the
widget drops keys it already shows, so nothing is shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import WSMsgType, web

from bridge.core.visitor_thread import LOOK_BACK_MS, EventKey, visitor_view
from bridge.store.widget import WidgetStore
from bridge.web.bodies import json_object
from bridge.web.errors import ApiError
from bridge.web.keys import settings_key
from bridge.web.widget import (
    check_ip_budget,
    check_origin,
    guarded,
    key_param,
    verify_token,
    widget_store_key,
)
from bridge.web.widget_hub import VisitorHub, hub_ctx, hub_key

log = logging.getLogger("bridge.widget")
routes = web.RouteTableDef()

HELLO_TIMEOUT_S = 10
MAX_POLL_WAIT_S = 25
HEARTBEAT_S = 30
# Messages one socket may send a minute (hello, read positions, typing): a client looping
# on them is cut off, the others are not slowed.
SOCKET_MESSAGES_PER_MIN = 120
TYPING_EVERY_S = 2.0


class Thread:
    """One visitor's read position over the thread: what was sent lately, so a re-read
    that looks back (LOOK_BACK_MS) sends each event once."""

    def __init__(self, store: WidgetStore, cid: str, cursor: EventKey | None,
                 ticket_ids: list[str]) -> None:
        self.store = store
        self.cid = cid
        self.cursor = cursor
        self.ticket_ids = set(ticket_ids)
        self.recent: set[EventKey] = set()

    async def unsent(self) -> tuple[list[dict[str, Any]], bool]:
        """The events after the cursor not sent yet, as the visitor sees them; and whether
        more wait (read again)."""
        page = await self.store.events_after(self.cid, self.cursor,
                                             ticket_ids=sorted(self.ticket_ids, key=int))
        views = []
        for event in page.events:
            key = EventKey.of(event.ticket_id, event.id)
            if key in self.recent:
                continue
            self.recent.add(key)
            if self.cursor is None or key > self.cursor:
                self.cursor = key
            view = visitor_view(event)
            if view is not None:
                views.append(view)
        if self.cursor is not None:
            floor = self.cursor.ms - LOOK_BACK_MS
            self.recent = {k for k in self.recent if k.ms >= floor}
        return views, page.more


class SocketVisitor:
    """A visitor on a WebSocket: changes wake one pump task that sends what is new."""

    def __init__(self, ws: web.WebSocketResponse, thread: Thread) -> None:
        self.ws = ws
        self.thread = thread
        self.dirty = True
        self.pump_task: asyncio.Task[None] | None = None
        self.typing_task: asyncio.Task[None] | None = None

    def changed(self, ticket_ids: Iterable[str]) -> None:
        self.thread.ticket_ids.update(ticket_ids)
        self.dirty = True
        if self.pump_task is None or self.pump_task.done():
            self.pump_task = asyncio.create_task(self.pump())

    def typing(self, who: str) -> None:
        busy = self.typing_task is not None and not self.typing_task.done()
        if who == "agent" and not self.ws.closed and not busy:
            self.typing_task = asyncio.create_task(self._send({"type": "typing", "who": who}))

    async def pump(self) -> None:
        try:
            while self.dirty and not self.ws.closed:
                self.dirty = False
                views, more = await self.thread.unsent()
                self.dirty = self.dirty or more
                if views:
                    await self._send({"type": "events", "events": views,
                                      "cursor": str(self.thread.cursor)})
        except Exception:
            # Redis gone, socket gone: the client reconnects and resumes from its cursor.
            log.warning("widget socket pump failed; closing it", exc_info=True)
            await self.ws.close(code=1011)

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(message, ensure_ascii=False))


class PollVisitor:
    def __init__(self) -> None:
        self.woken = asyncio.Event()

    def changed(self, ticket_ids: Iterable[str]) -> None:
        self.woken.set()

    def typing(self, who: str) -> None:
        return None


async def _hello(ws: web.WebSocketResponse) -> dict[str, Any]:
    try:
        async with asyncio.timeout(HELLO_TIMEOUT_S):
            msg = await ws.receive()
    except TimeoutError:
        raise ApiError(408, "hello_timeout", "send hello first") from None
    if msg.type is not WSMsgType.TEXT:
        raise ApiError(400, "invalid", "the first message must be a JSON hello")
    try:
        data = json.loads(msg.data)
    except (ValueError, RecursionError):  # "[[[[…": too deep for the decoder
        raise ApiError(400, "invalid", "messages are JSON objects") from None
    if not isinstance(data, dict) or data.get("type") != "hello" or not isinstance(
            data.get("token"), str):
        raise ApiError(400, "invalid", 'the first message is {"type": "hello", "token": ...}')
    return data


@routes.get("/widget/v1/ws")
async def socket(request: web.Request) -> web.WebSocketResponse:
    """Refused before the upgrade (403 origin, 429 budget); then the first message must be
    a hello with the visitor token and the last key seen."""
    check_origin(request)
    await check_ip_budget(request)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=8192, compress=False)
    await ws.prepare(request)
    try:
        await _converse(request, ws)
    except Exception:
        # Upgraded: the edge's error answer (a 500, Redis's 503) would be written into the
        # socket as if it were frames. The client reconnects and resumes from its cursor.
        log.warning("widget socket failed; closing it", exc_info=True)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=1011)
    return ws


async def _converse(request: web.Request, ws: web.WebSocketResponse) -> None:
    store = request.app[widget_store_key]
    hub = request.app[hub_key]
    hub.handshaking.add(ws)
    try:
        hello = await _hello(ws)
        ctx = verify_token(request.app[settings_key], hello["token"])
        after = key_param(hello, "after")
        seen = _seen_keys(hello.get("seen", []))
    except ApiError as exc:
        # The client may be gone already (or the process stopping): nothing to tell then.
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps({"type": "error", "code": exc.code,
                                          "message": exc.message}))
        await ws.close(code=4000 + exc.status)
        return
    finally:
        hub.handshaking.discard(ws)
    thread = Thread(store, ctx.contact_id, after, await store.ticket_ids(ctx.contact_id))
    # What the visitor already shows near its cursor is not sent again; what it lacks there
    # (another ticket's event of the same millisecond) is.
    thread.recent.update(seen)
    if after is not None:
        thread.recent.add(after)
    visitor = SocketVisitor(ws, thread)
    try:
        with hub.listening(ctx.contact_id, visitor):
            # Listening first, then reading: a change between the two wakes the pump again.
            visitor.changed(())
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str('{"type":"ready"}')
                await _receive(ws, store, ctx.contact_id)
    finally:  # a failure too (the socket then closes with 1011)
        if visitor.pump_task is not None:
            visitor.pump_task.cancel()


MAX_SEEN = 200


def _seen_keys(raw: Any) -> set[EventKey]:
    if not isinstance(raw, list) or len(raw) > MAX_SEEN or not all(
            isinstance(k, str) for k in raw):
        raise ApiError(400, "invalid", f"seen must be a list of at most {MAX_SEEN} event keys")
    try:
        return {EventKey.parse(k) for k in raw}
    except ValueError as exc:
        raise ApiError(400, "invalid", f"seen: {exc}") from None


async def _receive(ws: web.WebSocketResponse, store: WidgetStore, cid: str) -> None:
    window_start, count, typed_at = time.monotonic(), 0, 0.0
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            continue
        now = time.monotonic()
        if now - window_start > 60:
            window_start, count = now, 0
        count += 1
        if count > SOCKET_MESSAGES_PER_MIN:
            await ws.close(code=1008, message=b"too many messages")
            return
        try:
            data = json.loads(msg.data)
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "read":
                upto = key_param(data, "key")
                if upto is not None:
                    await store.mark_read(cid, upto)
            elif kind == "typing":
                if now - typed_at >= TYPING_EVERY_S:
                    typed_at = now
                    await store.publish_typing(cid, "visitor")
            else:
                raise ApiError(400, "invalid", "a message is a JSON object of type read or "
                                               "typing")
        except (ValueError, RecursionError):
            await _rejected(ws, "invalid", "a message is a JSON object of type read or typing")
        except ApiError as exc:
            await _rejected(ws, exc.code, exc.message)


async def _rejected(ws: web.WebSocketResponse, code: str, message: str) -> None:
    """A bad message is answered and dropped; the socket stays. Not an `error` frame:
    that one ends the session (the widget drops its token and starts a new one)."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(json.dumps({"type": "rejected", "code": code, "message": message}))


@routes.post("/widget/v1/poll")
async def poll(request: web.Request) -> web.Response:
    """Long polling: the events after `after`, waiting up to `wait_s` for one."""
    ctx = await guarded(request)
    data = await json_object(request, frozenset({"after", "wait_s"}), optional=True)
    after = key_param(data, "after")
    wait_s = data.get("wait_s", MAX_POLL_WAIT_S)
    if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or not (
            0 <= wait_s <= MAX_POLL_WAIT_S):
        raise ApiError(400, "invalid", f"wait_s must be 0 to {MAX_POLL_WAIT_S}")
    store = request.app[widget_store_key]
    waiter = PollVisitor()
    deadline = asyncio.get_running_loop().time() + wait_s
    with request.app[hub_key].listening(ctx.contact_id, waiter):
        views, cursor = await _after(store, ctx.contact_id, after)
        # A wake-up may bring nothing to show (a re-read of every visitor, an invisible
        # event): wait again until the deadline.
        while not views and not request.app[hub_key].stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await waiter.woken.wait()
            if asyncio.get_running_loop().time() >= deadline:
                break
            waiter.woken.clear()
            views, cursor = await _after(store, ctx.contact_id, after)
    return web.json_response({"events": views, "cursor": str(cursor) if cursor else None})


async def _after(store: WidgetStore, cid: str, after: EventKey | None
                 ) -> tuple[list[dict[str, Any]], EventKey | None]:
    # A poll has no memory between requests: strictly after the client's cursor.
    thread = Thread(store, cid, after, await store.ticket_ids(cid))
    page = await store.events_after(cid, after, ticket_ids=sorted(thread.ticket_ids, key=int))
    cursor, views = after, []
    for event in page.events:
        key = EventKey.of(event.ticket_id, event.id)
        if after is not None and key <= after:
            continue
        cursor = key if cursor is None or key > cursor else cursor
        if (view := visitor_view(event)) is not None:
            views.append(view)
    return views, cursor


async def close_sockets(app: web.Application) -> None:
    """Stopping: tell every visitor to reconnect (1012, service restart) rather than leave
    the server waiting on open sockets; the widgets resume on another process or this
    one's successor."""
    listening = [listener for listeners in app[hub_key].by_contact.values()
                 for listener in listeners]
    app[hub_key].stopping = True
    for listener in listening:
        if isinstance(listener, PollVisitor):
            listener.woken.set()  # answered now; the widget polls the next process
    sockets = [listener.ws for listener in listening if isinstance(listener, SocketVisitor)]
    sockets += app[hub_key].handshaking
    await asyncio.gather(*(ws.close(code=1012, message=b"restarting") for ws in sockets),
                         return_exceptions=True)


def setup(app: web.Application) -> None:
    app[hub_key] = VisitorHub()
    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(close_sockets)
    app.add_routes(routes)
