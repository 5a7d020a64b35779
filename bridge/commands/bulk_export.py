"""`bridge export --since ... --format ndjson|csv [--kind tickets|events]`: tickets (or their
thread events) changed since a time, written to stdout or a file, for loading into BI tools.
It reads Redis directly, a page at a time (bridge/store/export_bulk.py)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

from bridge.commands.outbound import _settings_and_url, redis_url_option
from bridge.core.export_rows import EVENT_COLUMNS, TICKET_COLUMNS, event_row, render, ticket_row
from bridge.store.connection import async_redis
from bridge.store.export_bulk import events_since, tickets_since
from bridge.store.tickets import TicketStore

PAGE = 500


async def write_export(store: TicketStore, out: TextIO, *, kind: str, fmt: str,
                       since_ms: int, anonymize: bool = False) -> int:
    """Write every row (tickets or events) since then; how many were written."""
    written = 0
    first = True
    if kind == "tickets":
        after_id: int | None = 0
        while after_id is not None:
            tickets, after_id = await tickets_since(store, since_ms, after_id=after_id,
                                                    limit=PAGE)
            out.write(render([ticket_row(t) for t in tickets], TICKET_COLUMNS, fmt,
                             header=first))
            first, written = False, written + len(tickets)
        return written
    cursor: tuple[int, str] | None = (0, "")
    while cursor is not None:
        events, cursor = await events_since(store, since_ms, cursor=cursor, limit=PAGE)
        out.write(render([event_row(e, anonymize=anonymize) for e in events], EVENT_COLUMNS,
                         fmt, header=first))
        first, written = False, written + len(events)
    return written


@click.command("export")
@click.option("--since", default="1970-01-01T00:00:00Z", show_default=True,
              help="ISO 8601 time: what changed at or after it.")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson",
              show_default=True)
@click.option("--kind", type=click.Choice(["tickets", "events"]), default="tickets",
              show_default=True)
@click.option("--anonymize", is_flag=True, help="Events: leave message bodies out.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File to write (default: standard output).")
@redis_url_option
def export(since: str, fmt: str, kind: str, anonymize: bool, output: Path | None,
           redis_url: str | None) -> None:
    """Bulk export of tickets or events, for BI tools."""
    try:
        stamp = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("an ISO 8601 time such as 2026-12-01T00:00:00Z",
                                 param_hint="--since") from None
    since_ms = max(0, int((stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
                           ).timestamp() * 1000))
    settings, url = _settings_and_url(redis_url)

    async def go(out: TextIO) -> int:
        client = async_redis(settings, url)
        try:
            return await write_export(TicketStore(client), out, kind=kind, fmt=fmt,
                                      since_ms=since_ms, anonymize=anonymize)
        finally:
            await client.aclose()

    if output is None:
        count = asyncio.run(go(sys.stdout))
    else:
        with output.open("w", encoding="utf-8", newline="") as out:
            count = asyncio.run(go(out))
    click.echo(f"exported {count} {kind}", err=True)
