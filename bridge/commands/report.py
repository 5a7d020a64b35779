"""`bridge report`: the reports page's figures on the command line (the same numbers as
`GET /api/v1/reports/overview`), read from Redis directly."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from typing import Any

import click

from bridge.commands.outbound import _settings_and_url, redis_url_option
from bridge.core.messages import Channel
from bridge.core.report_figures import csv_rows
from bridge.report_query import PeriodError, build_report, parse_period
from bridge.store.connection import async_redis


@click.command()
@click.option("--since", default="", help="First day (YYYY-MM-DD) or time; default: 30 days "
              "before --until.")
@click.option("--until", default="", help="Day after the last (YYYY-MM-DD) or time; default: "
              "tomorrow.")
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of the dates.")
@click.option("--channel", type=click.Choice([c.value for c in Channel]), default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@redis_url_option
def report(since: str, until: str, tz: str, channel: str | None, fmt: str,
           redis_url: str | None) -> None:
    """Ticket, response-time, CSAT and agent figures over a period."""
    settings, url = _settings_and_url(redis_url)
    try:
        period = parse_period(since=since, until=until, tz=tz, channel=channel or "")
    except PeriodError as exc:
        raise click.BadParameter(str(exc)) from None

    async def fetch() -> dict[str, Any]:
        client = async_redis(settings, url)
        try:
            return await build_report(client, period)
        finally:
            await client.aclose()

    figures = asyncio.run(fetch())
    if fmt == "json":
        click.echo(json.dumps(figures, indent=2))
        return
    rows = csv_rows(figures)
    if fmt == "csv":
        csv.writer(sys.stdout, lineterminator="\n").writerows(rows)
        return
    width = max(len(f"{section} {name}") for section, name, _ in rows[1:])
    for section, name, value in rows[1:]:
        click.echo(f"{section} {name}".ljust(width) + "  " + (value or "-"))
