"""Report figures from the per-hour counters (layout: bridge/core/report_counts.py): the
period's hours and days to read, medians and 90th percentiles from the histograms, rates,
the quality index, and the flat rows of the CSV download. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bridge.core.report_counts import (
    BUCKETS,
    FIRST_REPLY_TARGET_S,
    SCALARS,
    SLOTS,
    Scalar,
    TimeMetric,
    bucket_value,
    hist_slot,
)

HOUR_MS = 3_600_000
DAY_HOURS = 24
# The quality index weighs these two shares equally (README "Reports").
QUALITY_WEIGHTS = {"first_reply_in_target": 0.5, "csat_score": 0.5}


@dataclass(frozen=True)
class ReadPlan:
    """The counters that cover a period: whole UTC days where they fit, hours elsewhere."""

    hours: list[int]
    days: list[int]


def plan(since_ms: int, until_ms: int) -> ReadPlan:
    first, end = since_ms // HOUR_MS, until_ms // HOUR_MS
    hours: list[int] = []
    days: list[int] = []
    h = first
    while h < end:
        if h % DAY_HOURS == 0 and h + DAY_HOURS <= end:
            days.append(h // DAY_HOURS)
            h += DAY_HOURS
        else:
            hours.append(h)
            h += 1
    return ReadPlan(hours, days)


def local_days(since_ms: int, until_ms: int, zone: ZoneInfo) -> list[tuple[str, int, int]]:
    """(local date, first UTC hour, end UTC hour) of each day of the period in `zone`."""
    out = []
    day = datetime.fromtimestamp(since_ms / 1000, zone).date()
    while True:
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        nxt = day + timedelta(days=1)
        stop = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
        start_ms = max(since_ms, int(start.timestamp() * 1000))
        stop_ms = min(until_ms, int(stop.timestamp() * 1000))
        if start_ms >= until_ms:
            break
        out.append((day.isoformat(), start_ms // HOUR_MS, stop_ms // HOUR_MS))
        day = nxt
    return out


def summed(rows: Iterable[Sequence[int]], width: int = SLOTS) -> list[int]:
    """Slot-wise sum of counter rows (a missing row is all zeros)."""
    rows = list(rows)
    if not rows:
        return [0] * width
    return [sum(column) for column in zip(*rows, strict=True)]


def quantile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile (nearest rank) of a histogram, as its bucket's middle value."""
    n = sum(hist)
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for index, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return round(bucket_value(index), 1)
    return None


def _hist(totals: Sequence[int], metric: TimeMetric) -> list[int]:
    start = hist_slot(metric, 0)
    return list(totals[start:start + BUCKETS])


def time_figure(totals: Sequence[int], metric: TimeMetric) -> dict[str, Any]:
    hist = _hist(totals, metric)
    return {"count": sum(hist), "median_s": quantile(hist, 0.5), "p90_s": quantile(hist, 0.9)}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def quality_index(first_replies: int, in_target: int, ratings: int, positive: int
                  ) -> float | None:
    """0-100: the weighted mean of the share of first replies within the target and the
    CSAT score, over the parts that have data (None without either)."""
    parts = {"first_reply_in_target": _ratio(in_target, first_replies),
             "csat_score": _ratio(positive, ratings)}
    present = {k: v for k, v in parts.items() if v is not None}
    if not present:
        return None
    weight = sum(QUALITY_WEIGHTS[k] for k in present)
    return round(100 * sum(QUALITY_WEIGHTS[k] * v for k, v in present.items()) / weight, 1)


def _s(totals: Sequence[int], scalar: Scalar) -> int:
    return int(totals[int(scalar)])


def summary(*, channels: Mapping[str, Sequence[int]], agents: Mapping[str, Sequence[int]],
            daily: Sequence[tuple[str, Mapping[str, Sequence[int]]]],
            unsolved_by_status: Mapping[str, int]) -> dict[str, Any]:
    """The report's figures from the period's counter totals per channel and per agent, and
    the per-day scalar counters (date -> channel -> scalars)."""
    total = summed(channels.values())
    created, solved = _s(total, Scalar.CREATED), _s(total, Scalar.SOLVED)
    ratings, positive = _s(total, Scalar.RATINGS), _s(total, Scalar.POSITIVE)
    first, in_target = _s(total, Scalar.FIRST_REPLIES), _s(total, Scalar.FIRST_REPLIES_IN_TARGET)
    return {
        "tickets": {
            "created": created, "solved": solved, "closed": _s(total, Scalar.CLOSED),
            "reopened": _s(total, Scalar.REOPENED),
            "reopen_rate": _ratio(_s(total, Scalar.REOPENED), solved),
            "replies": _s(total, Scalar.REPLIES),
            "by_channel": {c: {"created": _s(t, Scalar.CREATED), "solved": _s(t, Scalar.SOLVED)}
                           for c, t in sorted(channels.items())},
            "unsolved_now_by_status": dict(unsolved_by_status),
        },
        "times": {m.name.lower(): time_figure(total, m) for m in TimeMetric},
        "csat": {
            "surveys_sent": _s(total, Scalar.SURVEYS_SENT), "ratings": ratings,
            "positive": positive, "score": _ratio(positive, ratings),
            "response_rate": _ratio(ratings, _s(total, Scalar.SURVEYS_SENT)),
            "distribution": {str(r): _s(total, Scalar(Scalar.RATING_1 + r - 1))
                             for r in range(1, 6)},
        },
        "quality_index": {
            "value": quality_index(first, in_target, ratings, positive),
            "first_reply_target_s": FIRST_REPLY_TARGET_S,
            "first_replies": first, "first_replies_in_target": in_target,
            "first_reply_in_target_share": _ratio(in_target, first),
            "csat_score": _ratio(positive, ratings),
        },
        "agents": [
            {"name": name, "solved": _s(t, Scalar.SOLVED), "replies": _s(t, Scalar.REPLIES),
             "first_replies": _s(t, Scalar.FIRST_REPLIES),
             "first_reply_median_s": quantile(_hist(t, TimeMetric.FIRST_REPLY), 0.5)}
            for name, t in sorted(agents.items())
            if any(t[:SCALARS])
        ],
        "daily": [
            {"date": day, **{key: sum(_s(t, scalar) for t in per_channel.values())
                             for key, scalar in (("created", Scalar.CREATED),
                                                 ("solved", Scalar.SOLVED),
                                                 ("replies", Scalar.REPLIES))}}
            for day, per_channel in daily
        ],
    }


def csv_rows(report: dict[str, Any]) -> list[list[str]]:
    """The report flattened to (section, name, value) rows, one figure each."""
    rows = [["section", "name", "value"]]

    def add(section: str, name: str, value: Any) -> None:
        rows.append([section, name, "" if value is None else str(value)])

    for key in ("since", "until", "time_zone", "channel"):
        add("period", key, report.get(key))
    tickets = report["tickets"]
    for key in ("created", "solved", "closed", "reopened", "reopen_rate", "replies"):
        add("tickets", key, tickets[key])
    for channel, counts in tickets["by_channel"].items():
        for key, value in counts.items():
            add("tickets", f"{key}.{channel}", value)
    for status, count in tickets["unsolved_now_by_status"].items():
        add("tickets", f"unsolved_now.{status}", count)
    for metric, figure in report["times"].items():
        for key, value in figure.items():
            add("times", f"{metric}.{key}", value)
    for key, value in report["csat"].items():
        if key == "distribution":
            for rating, count in value.items():
                add("csat", f"rating_{rating}", count)
        else:
            add("csat", key, value)
    for key, value in report["quality_index"].items():
        add("quality_index", key, value)
    for agent in report["agents"]:
        for key, value in agent.items():
            if key != "name":
                add("agents", f"{agent['name']}.{key}", value)
    for day in report["daily"]:
        for key, value in day.items():
            if key != "date":
                add("daily", f"{day['date']}.{key}", value)
    return rows
