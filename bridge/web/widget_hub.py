"""The widget's process-wide side: the visitors connected to this web process, by
contact, and the two feeds that wake them, followed only while someone listens: the
change log (through the process's LiveFeed) and the typing signals (Redis pub/sub)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from bridge.core.visitor_thread import concerns_visitor
from bridge.store.widget import WidgetStore
from bridge.web.keys import live_feed_key
from bridge.web.live import Resync
from bridge.web.widget import widget_store_key

log = logging.getLogger("bridge.widget")

# How often an idle feed checks whether anyone still listens here.
IDLE_CHECK_S = 5.0


class Listener(Protocol):
    def changed(self, ticket_ids: Iterable[str]) -> None: ...

    def typing(self, who: str) -> None: ...


class VisitorHub:
    """The visitors connected to this process, by contact id; fed by one LiveFeed
    subscription and one typing subscription for the whole process."""

    def __init__(self) -> None:
        self.by_contact: dict[str, set[Listener]] = {}
        # Set while someone listens: the process follows the change log and the typing
        # signals only then (a process serving webhooks alone holds no Redis connection
        # blocked in a read for the widget).
        self.active = asyncio.Event()
        self.stopping = False  # the process is shutting down: pollers answer now
        # Sockets still waiting for their hello (closed on shutdown too).
        self.handshaking: set[web.WebSocketResponse] = set()

    @contextlib.contextmanager
    def listening(self, cid: str, listener: Listener) -> Any:
        self.by_contact.setdefault(cid, set()).add(listener)
        self.active.set()
        try:
            yield
        finally:
            listeners = self.by_contact.get(cid)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self.by_contact[cid]
                    if not self.by_contact:
                        self.active.clear()

    def changed(self, cid: str, ticket_ids: Iterable[str]) -> None:
        ids = [t for t in ticket_ids if t]
        for listener in tuple(self.by_contact.get(cid, ())):
            listener.changed(ids)

    def resync(self) -> None:
        for cid in tuple(self.by_contact):
            self.changed(cid, ())

    def typing(self, cid: str, who: str) -> None:
        for listener in tuple(self.by_contact.get(cid, ())):
            listener.typing(who)


hub_key = web.AppKey("widget_hub", VisitorHub)


async def _follow_changes(app: web.Application, hub: VisitorHub) -> None:
    await hub.active.wait()
    async with app[live_feed_key].subscribe(everything=True) as changes:
        # Subscribed (again): what changed before the feed's start is read now, so a
        # visitor who connected meanwhile misses nothing.
        hub.resync()
        while hub.by_contact:
            try:
                async with asyncio.timeout(IDLE_CHECK_S):
                    item = await changes.get()
            except TimeoutError:
                continue
            if isinstance(item, Resync):
                hub.resync()  # the feed lost track: every visitor here re-reads
            elif item.contact_id in hub.by_contact and concerns_visitor(item):
                hub.changed(item.contact_id, (item.ticket_id, item.previous_ticket_id))


async def _follow_typing(store: WidgetStore, hub: VisitorHub) -> None:
    await hub.active.wait()
    async for cid, who in store.typing_signals(while_=lambda: bool(hub.by_contact)):
        hub.typing(cid, who)


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[hub_key]
    store = app[widget_store_key]
    tasks = [asyncio.create_task(_forever(lambda: _follow_changes(app, hub))),
             asyncio.create_task(_forever(lambda: _follow_typing(store, hub)))]
    yield
    # A cancel that lands while redis-py connects can be swallowed there (the task then
    # waits on, "cancelling" forever): cancel again until every task has ended.
    pending = set(tasks)
    for _ in range(10):
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
        if not pending:
            break


async def _forever(run: Callable[[], Any]) -> None:
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("widget feed stopped; following it again", exc_info=True)
            await asyncio.sleep(1)
