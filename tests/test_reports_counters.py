"""Report figures from the counters, checked against a hand-computed fixture history."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime

import pytest
import redis.asyncio
from click.testing import CliRunner

from bridge.commands.report import report as report_command
from bridge.core.report_counts import (
    Created,
    Fact,
    PublicReply,
    Rated,
    StatusTo,
    SurveySent,
    TicketFigures,
    bucket_of,
    bucket_value,
    step,
)
from bridge.report_query import build_report, parse_period
from bridge.store.report_counters import ReportCounters
from tests.conftest import AGENT_TOKEN, Client
from tests.workspace_support import sign_in

T0 = int(datetime(2026, 11, 1, 8, tzinfo=UTC).timestamp() * 1000)
DAY2 = int(datetime(2026, 11, 2, 9, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
HOUR = 60 * MIN

# ticket -> its facts, in order. Hand-computed figures below.
HISTORY: dict[str, list[Fact]] = {
    "A": [Created(T0, "whatsapp"), PublicReply(T0 + 10 * MIN, "alice"),
          StatusTo(T0 + 10 * MIN, "pending"), StatusTo(T0 + 70 * MIN, "open"),
          StatusTo(T0 + 2 * HOUR, "solved", "alice"), SurveySent(T0 + 2 * HOUR),
          Rated(T0 + 3 * HOUR, 5)],
    "B": [Created(T0 + HOUR, "whatsapp"), PublicReply(T0 + 3 * HOUR, "bob"),
          StatusTo(T0 + 4 * HOUR, "solved", "bob"), StatusTo(T0 + 5 * HOUR, "open"),
          StatusTo(T0 + 6 * HOUR, "solved", "bob"), SurveySent(T0 + 6 * HOUR),
          Rated(T0 + 7 * HOUR, 2), Rated(T0 + 8 * HOUR, 4)],
    "C": [Created(DAY2, "widget"), PublicReply(DAY2 + 30 * MIN, "alice")],
    "D": [Created(DAY2 + HOUR, "widget"), StatusTo(DAY2 + 2 * HOUR, "solved")],
}


async def record(counters: ReportCounters, history: dict[str, list[Fact]]) -> None:
    for ticket_id, facts in history.items():
        figures = TicketFigures()
        for n, fact in enumerate(facts):
            figures, increments = step(figures, fact)
            await counters.apply([(ticket_id, figures, f"{fact.at_ms}-{n}", increments)])


def approx(seconds: float) -> float:
    """What the report shows for an exact duration (its histogram bucket's middle)."""
    return round(bucket_value(bucket_of(seconds)), 1)


@pytest.fixture
async def report(aredis: redis.asyncio.Redis) -> dict[str, object]:
    await record(ReportCounters(aredis), HISTORY)
    return await build_report(aredis, parse_period(since="2026-11-01", until="2026-11-03"))


async def test_counts_and_rates(report: dict[str, object]) -> None:
    tickets = report["tickets"]
    assert tickets == {
        "created": 4, "solved": 3, "closed": 0, "reopened": 1, "reopen_rate": 0.3333,
        "replies": 3,
        "by_channel": {"whatsapp": {"created": 2, "solved": 2},
                       "widget": {"created": 2, "solved": 1}},
        "unsolved_now_by_status": {"new": 0, "open": 0, "pending": 0, "hold": 0},
    }
    assert report["csat"] == {
        "surveys_sent": 2, "ratings": 2, "positive": 2, "score": 1.0, "response_rate": 1.0,
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}}


async def test_one_batch_of_every_ticket_counts_as_their_changes_one_by_one(
        aredis: redis.asyncio.Redis, report: dict[str, object]) -> None:
    """The consumer applies a batch in one call, one update per ticket: the counters the
    tickets share (the same hours and days) are summed before they are written."""
    await aredis.flushdb()
    updates = []
    for ticket_id, facts in HISTORY.items():
        figures, increments = TicketFigures(), []
        for fact in facts:
            figures, moved = step(figures, fact)
            increments += moved
        updates.append((ticket_id, figures, f"{facts[-1].at_ms}-0", increments))
    counters = ReportCounters(aredis)
    await counters.apply(updates)
    batched = await build_report(aredis, parse_period(since="2026-11-01",
                                                      until="2026-11-03"))
    assert batched | {"generated_at": ""} == report | {"generated_at": ""}
    assert set((await counters.figures(list(HISTORY))).keys()) == set(HISTORY)


async def test_medians_and_90th_percentiles(report: dict[str, object]) -> None:
    times = report["times"]
    # first replies 600, 7200, 1800 s; resolutions 7200, 18000 (B's last solve), 3600;
    # requester waits 3600, 14400, 3600; agent waits 3600, 0, 0.
    assert times == {
        "first_reply": {"count": 3, "median_s": approx(1800), "p90_s": approx(7200)},
        "full_resolution": {"count": 3, "median_s": approx(7200), "p90_s": approx(18000)},
        "requester_wait": {"count": 3, "median_s": approx(3600), "p90_s": approx(14400)},
        "agent_wait": {"count": 3, "median_s": 0.0, "p90_s": approx(3600)},
    }
    for exact in (600, 1800, 3600, 7200, 14400, 18000):
        assert abs(approx(exact) - exact) <= 0.1 * exact


async def test_quality_index_and_agents(report: dict[str, object]) -> None:
    quality = report["quality_index"]
    assert quality["first_replies_in_target"] == 2 and quality["first_replies"] == 3
    assert quality["value"] == 83.3  # 100 * (0.5 * 2/3 + 0.5 * 2/2)
    assert report["agents"] == [
        {"name": "alice", "solved": 1, "replies": 2, "first_replies": 2,
         "first_reply_median_s": approx(600)},
        {"name": "bob", "solved": 1, "replies": 1, "first_replies": 1,
         "first_reply_median_s": approx(7200)},
    ]


async def test_daily_series_in_utc_and_in_the_viewers_time_zone(
        aredis: redis.asyncio.Redis, report: dict[str, object]) -> None:
    assert report["daily"] == [
        {"date": "2026-11-01", "created": 2, "solved": 2, "replies": 2},
        {"date": "2026-11-02", "created": 2, "solved": 1, "replies": 1},
    ]
    # 2026-11-01 07:00 in Los Angeles is 15:00 UTC: A's and B's openings fall on the
    # 1st there, all the rest of the 1st UTC too; C and D on the 2nd.
    la = await build_report(aredis, parse_period(since="2026-10-31", until="2026-11-03",
                                                 tz="America/Los_Angeles"))
    assert [d["created"] for d in la["daily"]] == [0, 2, 2]
    assert la["tickets"]["created"] == 4


async def test_a_channel_filter_and_a_period_that_leaves_out_the_second_day(
        aredis: redis.asyncio.Redis, report: dict[str, object]) -> None:
    widget = await build_report(aredis, parse_period(since="2026-11-01", until="2026-11-03",
                                                     channel="widget"))
    assert widget["tickets"]["created"] == 2 and widget["csat"]["ratings"] == 0
    first_day = await build_report(aredis, parse_period(since="2026-11-01",
                                                        until="2026-11-02"))
    assert first_day["tickets"]["created"] == 2 and first_day["tickets"]["solved"] == 2


async def test_a_change_applied_twice_counts_once(aredis: redis.asyncio.Redis) -> None:
    counters = ReportCounters(aredis)
    await record(counters, {"A": HISTORY["A"][:1]})
    (_, last), = (await counters.figures(["A"])).values()
    assert counters.applied(last, f"{T0}-0") and not counters.applied(last, f"{T0 + 1}-0")


@pytest.mark.parametrize(("since", "until", "tz", "message"), [
    ("2026-11-03", "2026-11-01", "", "before"),
    ("2025-01-01", "2026-11-01", "", "366"),
    ("yesterday", "", "", "date"),
    ("", "", "Mars/Olympus", "time zone"),
    # Counted to the hour: both ends in one hour read no hour (an IndexError, a 500).
    ("2026-12-05T05:10:00Z", "2026-12-05T05:50:00Z", "", "same hour"),
    ("2026-12-05T10:40:00", "2026-12-05T11:20:00", "Asia/Kolkata", "same hour"),
])
def test_bad_periods_are_refused(since: str, until: str, tz: str, message: str) -> None:
    from bridge.report_query import PeriodError

    with pytest.raises(PeriodError, match=message):
        parse_period(since=since, until=until, tz=tz)


# ------------------------------------------------------------------ the API and the page


async def test_the_overview_api_answers_json_and_csv(client: Client,
                                                      aredis: redis.asyncio.Redis) -> None:
    await record(ReportCounters(aredis), HISTORY)
    auth = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    query = "since=2026-11-01&until=2026-11-03&tz=Europe/Paris"
    answer = await client.get(f"/api/v1/reports/overview?{query}", headers=auth)
    assert answer.status == 200
    body = await answer.json()
    assert body["tickets"]["created"] == 4 and body["time_zone"] == "Europe/Paris"
    as_csv = await client.get(f"/api/v1/reports/overview?{query}",
                              headers={**auth, "Accept": "text/csv"})
    assert as_csv.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await as_csv.text())))
    assert ["tickets", "created", "4"] in rows and ["csat", "score", "1.0"] in rows
    assert ["quality_index", "value", "83.3"] in rows


@pytest.mark.parametrize("query", ["since=2026-11-05&until=2026-11-01", "tz=Nowhere/City",
                                   "channel=fax", "since=someday", "format=xml",
                                   # a directory of the zone database, a name too long for a
                                   # file: OSErrors, once answered 500
                                   "tz=Europe", "tz=Etc", "tz=" + "A" * 300,
                                   # plain dates skipped the 1970-9000 check (9999: a 500)
                                   "until=9999-12-31", "since=1900-01-01&until=1900-02-01",
                                   # both ends within one hour: a 500 once
                                   "since=2026-12-05T05:10:00Z&until=2026-12-05T05:50:00Z"])
async def test_the_overview_api_refuses_bad_periods(client: Client, query: str) -> None:
    answer = await client.get(f"/api/v1/reports/overview?{query}",
                              headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert answer.status == 422
    assert (await answer.json())["error"]["code"] == "invalid"


async def test_the_reports_page_draws_its_charts(client: Client,
                                                 aredis: redis.asyncio.Redis) -> None:
    await record(ReportCounters(aredis), HISTORY)
    await sign_in(client, AGENT_TOKEN)
    page = await client.get("/app/reports?since=2026-11-01&until=2026-11-03")
    html = await page.text()
    assert page.status == 200
    assert html.count('<svg class="chart"') == 2 and 'id="fig-created">4<' in html
    assert 'id="fig-quality">83.3<' in html
    # The same figures as the API's overview, closed and reopened included.
    api = await (await client.get("/api/v1/reports/overview?since=2026-11-01&until=2026-11-03",
                                  headers={"Authorization": f"Bearer {AGENT_TOKEN}"})).json()
    for figure in ("created", "solved", "closed", "reopened"):
        assert f'id="fig-{figure}">{api["tickets"][figure]}<' in html, figure
    download = await client.get("/app/reports?since=2026-11-01&until=2026-11-03&format=csv")
    assert download.content_type == "text/csv" and "tickets,created,4" in await download.text()
    bad = await client.get("/app/reports?since=2026-11-05&until=2026-11-01")
    assert bad.status == 422 and "From must be on or before To" in await bad.text()


def test_bridge_report_prints_the_same_figures(redis_url: str, sync_redis: object) -> None:
    async def fill() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await record(ReportCounters(client), HISTORY)
        finally:
            await client.aclose()

    asyncio.run(fill())
    args = ["--since", "2026-11-01", "--until", "2026-11-03", "--redis-url", redis_url]
    as_csv = CliRunner().invoke(report_command, [*args, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    assert "tickets,created,4" in as_csv.output and "quality_index,value,83.3" in as_csv.output
    table = CliRunner().invoke(report_command, args)
    assert "times first_reply.median_s" in table.output
    for zone in ("Nowhere/City", "Europe"):
        bad = CliRunner().invoke(report_command, ["--tz", zone, "--redis-url", redis_url])
        assert bad.exit_code != 0 and "unknown time zone" in bad.output, bad.output


async def test_a_channel_filter_names_the_figures_it_does_not_narrow(
        client: Client, aredis: redis.asyncio.Redis) -> None:
    """Agents' counters and the unsolved-now counts are kept across channels: filtered by
    channel, the answer and the page say so instead of passing them off as the channel's."""
    await record(ReportCounters(aredis), HISTORY)
    query = "/api/v1/reports/overview?since=2026-11-01&until=2026-11-03"
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    whole = await (await client.get(query, headers=headers)).json()
    assert whole["across_all_channels"] == []
    narrowed = await (await client.get(query + "&channel=widget", headers=headers)).json()
    assert narrowed["across_all_channels"] == ["agents", "tickets.unsolved_now_by_status"]
    await sign_in(client, AGENT_TOKEN)
    page = await (await client.get("/app/reports?since=2026-11-01&until=2026-11-03"
                                   "&channel=widget")).text()
    assert 'id="agents-scope"' in page and "all channels" in page
    page = await (await client.get("/app/reports?since=2026-11-01&until=2026-11-03")).text()
    assert 'id="agents-scope"' not in page


async def test_the_pages_to_date_is_included(client: Client, aredis: redis.asyncio.Redis
                                             ) -> None:
    """The form's "To" is the last day shown: one day picked twice is that day (it was the
    API's exclusive `until`, so the same day twice was a 422 and "To" today left today out)."""
    await record(ReportCounters(aredis), HISTORY)
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}"}

    async def created(query: str) -> int:
        answer = await client.get(f"/api/v1/reports/overview?{query}", headers=headers)
        return int((await answer.json())["tickets"]["created"])

    await sign_in(client, AGENT_TOKEN)
    one_day = await client.get("/app/reports?since=2026-11-01&to=2026-11-01")
    html = await one_day.text()
    assert one_day.status == 200
    assert f'id="fig-created">{await created("since=2026-11-01&until=2026-11-02")}<' in html
    both = await (await client.get("/app/reports?since=2026-11-01&to=2026-11-02")).text()
    assert f'id="fig-created">{await created("since=2026-11-01&until=2026-11-03")}<' in both
    assert 'name="to" type="date" value="2026-11-02"' in both
    # The download is the exact period shown.
    assert "until=2026-11-03T00%3A00%3A00%2B00%3A00" in both
    today = datetime.now(UTC).date().isoformat()
    default = await (await client.get("/app/reports")).text()
    assert f'name="to" type="date" value="{today}"' in default
    for to in ("soon", "9999-12-31"):  # the last: no next day (a 500)
        bad = await client.get(f"/app/reports?to={to}")
        assert bad.status == 422 and "To must be a date" in await bad.text()
    bad_from = await client.get("/app/reports?since=someday&to=2026-11-01")
    assert bad_from.status == 422 and "From must be a date" in await bad_from.text()
    reversed_days = await client.get("/app/reports?since=2026-11-02&to=2026-11-01")
    assert reversed_days.status == 422
    assert "From must be on or before To" in await reversed_days.text()
