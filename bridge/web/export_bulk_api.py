"""Bulk export for BI tools (admin): tickets and thread events changed since a time, paged.

    GET /api/v1/export/tickets?since=&cursor=&limit=&format=json|ndjson|csv
    GET /api/v1/export/events?since=&cursor=&limit=&format=&anonymize=true

JSON answers `{"tickets"|"events": [row], "next_cursor": str or null}`; NDJSON and CSV
answer the rows as text with the next cursor in the `X-Next-Cursor` header (absent on the
last page). A page may hold fewer rows than `limit` and still have a next one (README).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bridge.core.export_rows import (
    EVENT_COLUMNS,
    FORMATS,
    TICKET_COLUMNS,
    event_row,
    render,
    ticket_row,
)
from bridge.store.export_bulk import events_since, tickets_since
from bridge.web.auth import require_admin
from bridge.web.errors import unprocessable
from bridge.web.export_api import parse_since
from bridge.web.keys import store_key

routes = web.RouteTableDef()

MAX_LIMIT = 1000
_TICKET_CURSOR = re.compile(r"[0-9]{1,18}")
_EVENT_CURSOR = re.compile(r"([0-9]{1,18}):((?:[0-9]{1,20}-[0-9]{1,20})?)")
_MEDIA = {"ndjson": "application/x-ndjson", "csv": "text/csv"}


def _paging(request: web.Request) -> tuple[int, int, str]:
    q = request.query
    since_ms = parse_since(q["since"]) if "since" in q else 0
    raw = q.get("limit", "100")
    if not re.fullmatch(r"[0-9]{1,5}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise unprocessable(f"limit must be a number from 1 to {MAX_LIMIT}")
    fmt = q.get("format", "json")
    if fmt not in ("json", *FORMATS):
        raise unprocessable("format must be json, ndjson or csv")
    return since_ms, int(raw), fmt


def _answer(kind: str, rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str,
            cursor: str | None, *, first_page: bool) -> web.Response:
    if fmt == "json":
        return web.json_response({kind: rows, "next_cursor": cursor})
    headers = {"X-Next-Cursor": cursor} if cursor else {}
    return web.Response(text=render(rows, columns, fmt, header=first_page),
                        content_type=_MEDIA[fmt], charset="utf-8", headers=headers)


@routes.get("/api/v1/export/tickets")
async def export_tickets(request: web.Request) -> web.Response:
    require_admin(request)
    since_ms, limit, fmt = _paging(request)
    raw = request.query.get("cursor", "")
    if raw and not _TICKET_CURSOR.fullmatch(raw):
        raise unprocessable("cursor must be the next_cursor of a previous page")
    tickets, next_id = await tickets_since(request.app[store_key], since_ms,
                                           after_id=int(raw or 0), limit=limit)
    return _answer("tickets", [ticket_row(t) for t in tickets], TICKET_COLUMNS, fmt,
                   None if next_id is None else str(next_id), first_page=not raw)


@routes.get("/api/v1/export/events")
async def export_events(request: web.Request) -> web.Response:
    require_admin(request)
    since_ms, limit, fmt = _paging(request)
    anonymize = request.query.get("anonymize", "false")
    if anonymize not in ("true", "false"):
        raise unprocessable("anonymize must be true or false")
    raw = request.query.get("cursor", "")
    match = _EVENT_CURSOR.fullmatch(raw) if raw else None
    if raw and not match:
        raise unprocessable("cursor must be the next_cursor of a previous page")
    cursor = (int(match.group(1)), match.group(2)) if match else (0, "")
    events, following = await events_since(request.app[store_key], since_ms, cursor=cursor,
                                           limit=limit)
    rows = [event_row(e, anonymize=anonymize == "true") for e in events]
    return _answer("events", rows, EVENT_COLUMNS, fmt,
                   None if following is None else f"{following[0]}:{following[1]}",
                   first_page=not raw)
