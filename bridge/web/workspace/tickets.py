"""The ticket views: unsolved tickets grouped by status (solved and closed on request),
filtered by channel, assignee, tag and customer, each ticket's age coloured by the channel's
aging policy. A list longer than its page links to the next one (one status alone, paged
with the API's cursor, filters kept). The views fragment is served alone too, for the live
refresh, with the same query (so a refresh stays on the page shown)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bridge.core.messages import Channel
from bridge.core.tickets import Status
from bridge.store.report_counters import ReportCounters
from bridge.web.access import team_store, visible_to
from bridge.web.api import _NUMBER, _contact_id
from bridge.web.auth import Principal
from bridge.web.errors import ApiError, unprocessable
from bridge.web.keys import redis_key, settings_key, store_key
from bridge.web.serialize import ticket_json
from bridge.web.ticket_actions import contact_or_none
from bridge.web.workspace import teams_page
from bridge.web.workspace.common import page, render, render_fragment

routes = web.RouteTableDef()

VIEW_LIMIT = 50
# A customer-name filter reads tickets this many at a time, and looks at no more than
# NAME_SCAN of a view's newest (names have no index; a phone number or contact id does).
NAME_PAGE = 200
NAME_SCAN = 5000
UNSOLVED_VIEWS = (Status.NEW, Status.OPEN, Status.PENDING, Status.HOLD)
ALL_VIEWS = (*UNSOLVED_VIEWS, Status.SOLVED, Status.CLOSED)


@dataclass(frozen=True)
class Filters:
    channel: str = ""
    assignee: str = ""
    tag: str = ""
    customer: str = ""
    closed: bool = False

    @classmethod
    def of(cls, query: Any) -> Filters:
        channel = query.get("channel", "")
        return cls(channel=channel if channel in set(Channel) else "",
                   assignee=query.get("assignee", "")[:100],
                   tag=query.get("tag", "").strip().lower()[:50],
                   customer=_customer(query.get("customer", "")),
                   closed=query.get("closed") == "1")

    @property
    def filtered(self) -> bool:
        return bool(self.channel or self.assignee or self.tag or self.customer)

    def query_string(self) -> str:
        pairs = {k: v for k, v in (("channel", self.channel), ("assignee", self.assignee),
                                   ("tag", self.tag), ("customer", self.customer)) if v}
        if self.closed:
            pairs["closed"] = "1"
        return urlencode(pairs)


@dataclass(frozen=True)
class Paging:
    """One status list on a later page: `cursor` is the API's (GET /api/v1/tickets?status=
    &cursor=: the id of the last ticket shown, the store's list_tickets pages from it);
    `shown` is how many earlier pages listed, for the count of a list whose total is not
    known (filtered, or a viewer who does not see every ticket)."""

    status: Status
    cursor: int | None = None
    shown: int = 0

    @classmethod
    def of(cls, query: Any) -> Paging | None:
        """None without `status`; 422 for a status or cursor the API would refuse."""
        raw_status = query.get("status", "")
        if not raw_status:
            return None
        try:
            status = Status(raw_status)
        except ValueError:
            raise unprocessable(f"status must be one of {', '.join(Status)}") from None
        raw_cursor = query.get("cursor", "")
        if raw_cursor and not _NUMBER.fullmatch(raw_cursor):
            raise unprocessable("cursor must be the next_cursor of a previous page")
        shown = query.get("shown", "")
        return cls(status=status, cursor=int(raw_cursor) if raw_cursor else None,
                   shown=int(shown) if _NUMBER.fullmatch(shown) else 0)

    def query_string(self) -> str:
        pairs = {"status": self.status.value, "shown": str(self.shown)}
        if self.cursor is not None:
            pairs["cursor"] = str(self.cursor)
        return urlencode(pairs)


def _customer(raw: str) -> str:
    """The customer filter as typed, but for an unencoded "+" of a number, which arrives as
    a space: kept (as "+") for the API's parsing (`_contact_id`) to read it as a number,
    where stripping it made the number a name, or a 400."""
    text = raw[:100].rstrip()
    if text.startswith(" ") and text.lstrip()[:1].isdigit():
        return "+" + text.lstrip()
    return text.strip()


def _is_address(text: str) -> bool:
    return text.startswith(("+", "whatsapp:")) or text.replace(" ", "").isdigit()


async def views(request: web.Request, filters: Filters, who: Principal,
                paging: Paging | None = None) -> list[dict[str, Any]]:
    """One entry per status view: its tickets (as the API shapes them), their count and the
    cursor of its next page ("" : none); only the tickets `who` may see
    (bridge/core/teams.py; without groups, every one). With `paging`, its status alone,
    from its cursor."""
    keep = visible_to(who)
    if keep is not None and not await team_store(request.app).groups():
        keep = None
    store = request.app[store_key]
    settings = request.app[settings_key]
    contact_id = ""
    name_part = ""
    if filters.customer:
        if _is_address(filters.customer):
            contact_id = _contact_id(filters.customer, settings.contact_key_bytes)
        else:
            name_part = filters.customer.lower()
    now_ms = int(time.time() * 1000)
    shown = ((paging.status,) if paging is not None else
             ALL_VIEWS if filters.closed else UNSOLVED_VIEWS)
    before = paging.shown if paging is not None else 0
    # Without filters a view's count is its index's size; with them, what the page found.
    totals = ({} if filters.filtered or keep is not None else
              await ReportCounters(request.app[redis_key]).by_status([s.value for s in shown]))
    if filters.tag:
        # The tag is checked while the index is read, so the page fills with matches from
        # the whole view, not only from its newest tickets.
        see = keep
        keep = (lambda t: filters.tag in t.tags and see(t)) if see is not None else (
            lambda t: filters.tag in t.tags)
    out = []
    for status in shown:
        rows: list[dict[str, Any]] = []
        cursor = paging.cursor if paging is not None else None
        next_cursor: int | None = None
        scanned = 0
        while True:
            # A name needs each ticket's contact: pages are read until the view has its
            # page of matches or NAME_SCAN tickets were looked at (then "more" says so).
            tickets, cursor = await store.list_tickets(
                status=status, channel=filters.channel, assignee=filters.assignee,
                contact_id=contact_id, cursor=cursor,
                limit=NAME_PAGE if name_part else VIEW_LIMIT, keep=keep)
            scanned += len(tickets)
            next_cursor = cursor
            for n, ticket in enumerate(tickets):
                contact = await contact_or_none(store, ticket)
                if name_part and (contact is None or name_part not in contact.name.lower()):
                    continue
                rows.append(ticket_json(ticket, contact, settings=settings, now_ms=now_ms))
                if len(rows) == VIEW_LIMIT:
                    # A page of names ends mid-batch: the next starts after its last row,
                    # not after the batch (the rest of the batch was never looked at).
                    if n < len(tickets) - 1:
                        next_cursor = int(ticket.id)
                    break
            if (not name_part or cursor is None or len(rows) >= VIEW_LIMIT
                    or scanned >= NAME_SCAN):
                break
        # A total is known without filters (the status index's size); otherwise the count
        # is what this page and the earlier ones listed, "+" while there are more.
        out.append({"status": status.value, "tickets": rows,
                    "count": totals.get(status.value, before + len(rows)),
                    "more": next_cursor is not None and status.value not in totals,
                    "first": before + 1, "paged": paging is not None,
                    "next": "" if next_cursor is None else _href(filters, Paging(
                        status, next_cursor, before + len(rows)))})
    return out


def _query(filters: Filters, paging: Paging | None) -> str:
    return "&".join(q for q in (filters.query_string(),
                                paging.query_string() if paging else "") if q)


def _href(filters: Filters, paging: Paging | None) -> str:
    """The tickets page with the filters, on `paging`'s page (None: every list's first)."""
    query = _query(filters, paging)
    return f"/app/?{query}" if query else "/app/"


async def _context(request: web.Request, filters: Filters, paging: Paging | None
                   ) -> dict[str, Any]:
    # The people the ticket page offers (BRIDGE_AGENT_TOKENS and `bridge agents add`), and
    # the filter's value, so that the select shows it and re-applying keeps it. The live
    # refresh reads the page shown (its paging), not the first one.
    return {"filters": filters, "channels": [c.value for c in Channel],
            "agents": await teams_page.assignee_choices(request.app, filters.assignee),
            "first_page": _href(filters, None),
            "live_query": _query(filters, paging)}


@routes.get("/app/")
@page()
async def ticket_views(request: web.Request, who: Principal) -> web.Response:
    filters = Filters.of(request.query)
    paging = None
    # A filter the API would refuse (a customer that is no phone number) is said next to
    # the filters, which stay as typed: an error page would lose them and the lists.
    try:
        paging = Paging.of(request.query)
        shown, error, status = await views(request, filters, who, paging), "", 200
    except ApiError as exc:
        shown, error, status = [], exc.message, exc.status
    return render(request, "tickets.html", who=who, status=status, views=shown, error=error,
                  saved_views=await teams_page.saved_views(request, who),
                  **await _context(request, filters, paging))


@routes.get("/app/views")
@page()
async def ticket_views_fragment(request: web.Request, who: Principal) -> web.Response:
    """The views alone (the live refresh swaps them in)."""
    filters = Filters.of(request.query)
    paging = Paging.of(request.query)
    return render_fragment(request, "_views.html", who=who,
                           views=await views(request, filters, who, paging),
                           **await _context(request, filters, paging))
