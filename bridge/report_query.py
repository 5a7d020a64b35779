"""A report over a period, read from the counters (bridge/store/report_counters.py): the
JSON API, the workspace's reports page and `bridge report` all build it here.

The period is given in the viewer's time zone: dates are local midnights, times without an
offset are local times. Counters are kept per UTC hour, so a period's ends are taken to the
hour (a time zone with a half-hour offset is read to the hour before).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.asyncio import Redis

from bridge.core.report_counts import SCALARS, channel_dim
from bridge.core.report_figures import HOUR_MS, local_days, plan, summary, summed
from bridge.store.report_counters import ReportCounters

DEFAULT_DAYS = 30
MAX_DAYS = 366
# The figures a channel filter does not narrow (their counters are not kept per channel).
ACROSS_CHANNELS = ("agents", "tickets.unsolved_now_by_status")


class PeriodError(ValueError):
    """A period, time zone or filter the report cannot use; the message says why."""


@dataclass(frozen=True)
class ReportPeriod:
    since_ms: int
    until_ms: int
    zone: ZoneInfo
    channel: str = ""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    # A name that is a directory of the zone database ("Europe") or too long for a file
    # name fails as the OSError of opening it.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PeriodError(f"unknown time zone {name[:60]!r}: use an IANA name such as "
                          "Europe/Paris") from None


def _moment(raw: str, zone: ZoneInfo, name: str) -> datetime:
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            value = datetime(day.year, day.month, day.day, tzinfo=zone)
        else:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(f"{name} must be a date (2024-05-01) or an ISO 8601 time") from None
    if not 1970 <= value.year <= 9000:
        raise PeriodError(f"{name} must be between 1970 and 9000")
    return value if value.tzinfo else value.replace(tzinfo=zone)


def parse_period(*, since: str = "", until: str = "", tz: str = "", channel: str = "",
                 channels: tuple[str, ...] = (), now: datetime | None = None) -> ReportPeriod:
    """The period a viewer asked for; by default the 30 local days up to today included."""
    zone = _zone(tz)
    if channel and channels and channel not in channels:
        raise PeriodError(f"channel must be one of {', '.join(channels)}")
    if until:
        end = _moment(until, zone, "until")
    else:
        today = (now or datetime.now(UTC)).astimezone(zone).date() + timedelta(days=1)
        end = datetime(today.year, today.month, today.day, tzinfo=zone)
    if since:
        start = _moment(since, zone, "since")
    else:
        first = end.astimezone(zone).date() - timedelta(days=DEFAULT_DAYS)
        start = datetime(first.year, first.month, first.day, tzinfo=zone)
    if start >= end:
        raise PeriodError("since must be before until")
    if end - start > timedelta(days=MAX_DAYS):
        raise PeriodError(f"the period may be at most {MAX_DAYS} days")
    since_ms, until_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    # Counted to the hour, both ends within one hour would read no hour at all (it was an
    # IndexError, a 500): say so rather than answer a report of nothing.
    if since_ms // HOUR_MS == until_ms // HOUR_MS:
        raise PeriodError("since and until fall within the same hour: reports count whole "
                          "hours (period ends are taken to the hour)")
    return ReportPeriod(since_ms, until_ms, zone, channel)


def _iso(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).isoformat()


async def build_report(redis: Redis, period: ReportPeriod) -> dict[str, Any]:
    """Every figure of the period: a fixed number of counter reads per hour of the period
    and per channel or agent, whatever the number of tickets."""
    counters = ReportCounters(redis)
    dims = await counters.dims()
    channel_dims = [d for d in dims if d.startswith("c:")]
    if period.channel:
        channel_dims = [channel_dim(period.channel)]
    agent_dims = [d for d in dims if d.startswith("a:")]
    reading = plan(period.since_ms, period.until_ms)
    rows = await counters.totals([*channel_dims, *agent_dims], hours=reading.hours,
                                 days=reading.days)
    days = local_days(period.since_ms, period.until_ms, period.zone)
    all_hours = list(range(days[0][1], days[-1][2])) if days else []
    hourly = await counters.hourly_scalars(channel_dims, all_hours)
    daily = []
    for day, first, end in days:
        span = slice(first - all_hours[0], end - all_hours[0])
        daily.append((day, {dim[2:]: summed(hourly[dim][span], SCALARS)
                            for dim in channel_dims}))
    report = summary(
        channels={d[2:]: summed(rows[d]) for d in channel_dims},
        agents={d[2:]: summed(rows[d]) for d in agent_dims},
        daily=daily, unsolved_by_status=await counters.unsolved_by_status())
    # Agents' counters and the unsolved-now counts are kept across channels: with a channel
    # filter the report says so rather than let them pass for the channel's.
    across = list(ACROSS_CHANNELS) if period.channel else []
    return {"since": _iso(period.since_ms, period.zone),
            "until": _iso(period.until_ms, period.zone),
            "time_zone": period.zone.key, "channel": period.channel or None,
            "across_all_channels": across,
            **report,
            "generated_at": datetime.fromtimestamp(time.time(), UTC).isoformat()}
