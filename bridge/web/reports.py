"""Reports under /api/v1/reports/.

`GET /api/v1/reports/overview?since=&until=&tz=&channel=`: every figure of the workspace's
reports page (tickets created/solved/reopened, first reply, full resolution, requester and
agent wait as median and 90th percentile, CSAT score and response rate, per-agent figures,
the quality index, a per-day series), read from the counters the change log keeps
(bridge/report_query.py); `since`/`until` are dates or times in the time zone `tz` (IANA
name, default UTC); CSV with `Accept: text/csv` or `format=csv`.

CSAT report: `GET /api/v1/reports/csat?by=channel|agent&since=&until=`.

The period selects surveys by the time they were SENT (bridge.sending keeps the index
`bridge:idx:csat_sent`); for each group the answer counts the surveys sent, the ratings
received for them, their average, the response rate and the distribution 1..5.
`since` / `until` are ISO 8601 dates or times (UTC when no offset is given); the default
period is the last 30 days. `by=agent` groups by the ticket's assignee ("unassigned" when
none), `by=group` by its agents' group ("no group"), `by=field:<key>` by a ticket field's
value ("(none)" without one; a multiselect's options joined with commas).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bridge.core.csat import RATING_SCALE
from bridge.core.messages import Channel
from bridge.core.report_figures import csv_rows
from bridge.core.teams import Permission
from bridge.core.tickets import Ticket
from bridge.report_query import PeriodError, build_report, parse_period
from bridge.web.auth import require
from bridge.web.errors import unprocessable
from bridge.web.keys import redis_key, store_key
from bridge.web.serialize import iso

DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=366)
_BATCH = 500


@dataclass
class Group:
    key: str
    sent: int = 0
    distribution: dict[int, int] = field(default_factory=lambda: dict.fromkeys(RATING_SCALE, 0))

    @property
    def count(self) -> int:
        return sum(self.distribution.values())

    def to_dict(self) -> dict[str, Any]:
        count = self.count
        total = sum(score * n for score, n in self.distribution.items())
        return {
            "key": self.key,
            "surveys_sent": self.sent,
            "count": count,
            "average": round(total / count, 2) if count else None,
            "response_rate": round(count / self.sent, 3) if self.sent else None,
            "distribution": {str(s): n for s, n in self.distribution.items()},
        }


BY_FIELD = re.compile(r"field:[a-z0-9][a-z0-9_.-]{0,63}")


def group_key(ticket: Ticket, by: str) -> str:
    if by == "agent":
        return ticket.assignee or "unassigned"
    if by == "group":
        return ticket.group or "no group"
    if by.startswith("field:"):
        value = ticket.field_values.get(by.removeprefix("field:"))
        if value is None:
            return "(none)"
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return ticket.channel


def aggregate(tickets: Iterable[Ticket], by: str) -> tuple[Group, list[Group]]:
    """Pure: the overall figures and one group per channel / assignee, sorted by key."""
    total = Group("all")
    groups: dict[str, Group] = {}
    for t in tickets:
        group = groups.setdefault(group_key(t, by), Group(group_key(t, by)))
        for g in (total, group):
            g.sent += 1
            if t.csat_rating in g.distribution:
                g.distribution[t.csat_rating] += 1
    return total, [groups[k] for k in sorted(groups)]


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_time(raw: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        # In range once in UTC, so `until - 30 days` and iso() of either end cannot overflow
        # (and years print with four digits).
        in_range = EARLIEST <= value.astimezone(UTC) <= LATEST
    except (ValueError, OverflowError):
        in_range = False
    if not in_range:
        raise unprocessable(f"{name} must be an ISO 8601 date or time between 1970 and 9000, "
                            "e.g. 2024-05-01 or 2024-05-01T12:00:00Z")
    return value


def period(query: Any, now: datetime) -> tuple[datetime, datetime]:
    until = parse_time(query["until"], "until") if query.get("until") else now
    since = parse_time(query["since"], "since") if query.get("since") else until - DEFAULT_PERIOD
    if since >= until:
        raise unprocessable("since must be before until")
    if until - since > MAX_PERIOD:
        raise unprocessable("the period may be at most 366 days")
    return since, until


async def csat_report(request: web.Request) -> web.Response:
    require(request, Permission.REPORTS_READ)
    by = request.query.get("by", "channel")
    if by not in ("channel", "agent", "group") and not BY_FIELD.fullmatch(by):
        raise unprocessable("by must be channel, agent, group or field:<key>")
    since, until = period(request.query, datetime.now(UTC))
    store = request.app[store_key]
    since_ms, until_ms = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    ids = await store.surveyed_between(since_ms, until_ms)
    tickets: list[Ticket] = []
    for start in range(0, len(ids), _BATCH):
        tickets += await store.get_tickets(ids[start:start + _BATCH])
    total, groups = aggregate(tickets, by)
    return web.json_response({
        "by": by,
        "since": iso(since_ms),
        "until": iso(until_ms),
        "period_of": "survey_sent",
        "total": total.to_dict(),
        "groups": [g.to_dict() for g in groups],
        "generated_at": iso(int(time.time() * 1000)),
    })


def wants_csv(request: web.Request) -> bool:
    """format=csv or json (the OpenAPI enum) wins over the Accept header."""
    chosen = request.query.get("format", "")
    if chosen not in ("", "json", "csv"):
        raise unprocessable("format must be json or csv")
    return chosen == "csv" or (not chosen and "text/csv" in request.headers.get("Accept", ""))


def csv_response(rows: list[list[str]], filename: str) -> web.Response:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "Cache-Control": "no-store"})


async def overview_report(request: web.Request) -> web.Response:
    require(request, Permission.REPORTS_READ)
    q = request.query
    try:
        period = parse_period(since=q.get("since", ""), until=q.get("until", ""),
                              tz=q.get("tz", ""), channel=q.get("channel", ""),
                              channels=tuple(Channel))
    except PeriodError as exc:
        raise unprocessable(str(exc)) from None
    report = await build_report(request.app[redis_key], period)
    if wants_csv(request):
        return csv_response(csv_rows(report), "report.csv")
    return web.json_response(report)


routes: list[web.RouteDef] = [web.get("/api/v1/reports/csat", csat_report),
                              web.get("/api/v1/reports/overview", overview_report)]
