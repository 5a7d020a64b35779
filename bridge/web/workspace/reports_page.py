"""/app/reports: the period's figures (bridge/report_query.py) with SVG charts, in the
viewer's time zone, and the CSV download of the same numbers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bridge.core.messages import Channel
from bridge.core.report_figures import csv_rows
from bridge.report_query import PeriodError, ReportPeriod, build_report, parse_period
from bridge.web.auth import Principal
from bridge.web.keys import redis_key
from bridge.web.reports import csv_response
from bridge.web.workspace.charts import daily_bars, time_bars
from bridge.web.workspace.common import page, render
from bridge.web.workspace.i18n import language, translator

routes = web.RouteTableDef()

TIME_ZONES = ("UTC", "Europe/Paris", "Europe/London", "America/New_York",
              "America/Los_Angeles", "Africa/Abidjan", "Asia/Tokyo")
TIME_LABELS = {"first_reply": "First reply time", "full_resolution": "Full resolution time",
               "requester_wait": "Requester wait time", "agent_wait": "Agent wait time"}


def _charts(report: dict[str, Any], lang: str) -> dict[str, Any]:
    _ = translator(lang)
    daily = report["daily"]
    days = [d["date"] for d in daily]
    return {
        "volume": daily_bars("volume", _("Tickets created and solved per day"), days, [
            (_("created"), "bar-a", [d["created"] for d in daily]),
            (_("solved"), "bar-b", [d["solved"] for d in daily])]),
        "times": time_bars("times", _("Median and 90th percentile, in hours"), [
            (_(TIME_LABELS[k]), v["median_s"], v["p90_s"])
            for k, v in report["times"].items()], (_("median"), _("90th percentile"))),
    }


_FORM_WORDS = {
    "since must be before until": "From must be on or before To",
    "since must be a date (2024-05-01) or an ISO 8601 time":
        "From must be a date (2024-05-01) or an ISO 8601 time",
    "since must be between 1970 and 9000": "From must be between 1970 and 9000",
}


def _in_form_words(message: str) -> str:
    """A period error in the form's words (From, To), not the API's parameters."""
    return _FORM_WORDS.get(message, message)


def _end_of(last_day: str) -> str:
    """The form's "To" is the last day shown, included: the period ends at the next local
    midnight (the API's `until`, exclusive, which the page also takes, for links)."""
    try:
        return (date.fromisoformat(last_day) + timedelta(days=1)).isoformat()
    except (ValueError, OverflowError):  # 9999-12-31 has no next day
        raise PeriodError("To must be a date (2024-05-01)") from None


def _shown(period: ReportPeriod) -> tuple[str, str]:
    """The first and last local days the period covers, as the form shows them."""
    def local(ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, period.zone).date()
    return local(period.since_ms).isoformat(), local(period.until_ms - 1).isoformat()


@routes.get("/app/reports")
@page()
async def reports(request: web.Request, who: Principal) -> web.StreamResponse:
    q = request.query
    form = {"since": q.get("since", ""), "to": q.get("to", ""),
            "tz": q.get("tz", "") or "UTC", "channel": q.get("channel", "")}
    try:
        until = _end_of(form["to"]) if form["to"] else q.get("until", "")
        period = parse_period(since=form["since"], until=until, tz=form["tz"],
                              channel=form["channel"], channels=tuple(Channel))
    except PeriodError as exc:
        error = _in_form_words(str(exc))
        return render(request, "reports.html", who=who, status=422, error=error,
                      form=form, report=None, charts=None, time_zones=TIME_ZONES,
                      channels=[c.value for c in Channel], labels=TIME_LABELS, csv_query="")
    report = await build_report(request.app[redis_key], period)
    if q.get("format") == "csv":
        return csv_response(csv_rows(report), "report.csv")
    form["since"], form["to"] = _shown(period)
    # The exact period, encoded: a zone like Etc/GMT+5, or an offset, would otherwise
    # arrive with a space for its "+".
    csv_query = urlencode({k: v for k, v in {
        "since": report["since"], "until": report["until"], "tz": form["tz"],
        "channel": form["channel"]}.items() if v})
    return render(request, "reports.html", who=who, error="", form=form, report=report,
                  charts=_charts(report, language(request)), time_zones=TIME_ZONES,
                  channels=[c.value for c in Channel], labels=TIME_LABELS,
                  csv_query=csv_query)
