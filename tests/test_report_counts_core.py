"""The report counters' pure rules (bridge/core/report_counts.py, report_figures.py), as
tables."""

from __future__ import annotations

import pytest

from bridge.core.report_counts import (
    BUCKETS,
    Created,
    PublicReply,
    Rated,
    Scalar,
    StatusTo,
    TicketFigures,
    TimeMetric,
    agent_dim,
    bucket_of,
    bucket_value,
    channel_dim,
    figures_from_fields,
    figures_to_fields,
    hist_slot,
    step,
)
from bridge.core.report_figures import plan, quality_index, quantile

H = 3_600_000


@pytest.mark.parametrize(("seconds", "bucket"), [
    (0, 0), (0.5, 0), (1, 0), (1.1, 1), (2, 4), (2.1, 5), (3600, 48), (3601, 48),
    (86400, 66), (10**12, BUCKETS - 1),
])
def test_buckets(seconds: float, bucket: int) -> None:
    assert bucket_of(seconds) == bucket


@pytest.mark.parametrize("seconds", [2, 30, 600, 3600, 7200, 86400, 30 * 86400])
def test_a_bucket_value_is_within_ten_percent(seconds: float) -> None:
    assert abs(bucket_value(bucket_of(seconds)) - seconds) <= 0.1 * seconds


def _run(*facts: object) -> tuple[TicketFigures, list[tuple[str, int, int]]]:
    figures = TicketFigures()
    moved = []
    for fact in facts:
        figures, increments = step(figures, fact)  # type: ignore[arg-type]
        moved += [(i.dim, i.slot, i.delta) for i in increments]
    return figures, moved


WA = channel_dim("whatsapp")


@pytest.mark.parametrize(("facts", "expected"), [
    # created, then a reply 10 min later by alice: first reply counted for both dims.
    ([Created(0, "whatsapp"), PublicReply(600_000, "alice")],
     {(WA, Scalar.CREATED, 1), (WA, Scalar.REPLIES, 1),
      (agent_dim("alice"), Scalar.REPLIES, 1), (WA, Scalar.FIRST_REPLIES, 1),
      (agent_dim("alice"), Scalar.FIRST_REPLIES, 1),
      (WA, Scalar.FIRST_REPLIES_IN_TARGET, 1),
      (agent_dim("alice"), Scalar.FIRST_REPLIES_IN_TARGET, 1),
      (WA, hist_slot(TimeMetric.FIRST_REPLY, bucket_of(600)), 1),
      (agent_dim("alice"), hist_slot(TimeMetric.FIRST_REPLY, bucket_of(600)), 1)}),
    # a second reply is not a first reply.
    ([Created(0, "whatsapp"), PublicReply(H, ""), PublicReply(2 * H, "")],
     {(WA, Scalar.CREATED, 1), (WA, Scalar.REPLIES, 1), (WA, Scalar.FIRST_REPLIES, 1),
      (WA, Scalar.FIRST_REPLIES_IN_TARGET, 1),
      (WA, hist_slot(TimeMetric.FIRST_REPLY, bucket_of(3600)), 1), (WA, Scalar.REPLIES, 1)}),
])
def test_increments(facts: list[object], expected: set[tuple[str, int, int]]) -> None:
    assert set(_run(*facts)[1]) == expected


def test_a_second_solve_moves_the_first_and_a_reopen_counts_once() -> None:
    figures, moved = _run(Created(0, "whatsapp"), StatusTo(H, "solved", "bob"),
                          StatusTo(2 * H, "open"), StatusTo(3 * H, "solved", "bob"),
                          StatusTo(4 * H, "open"), StatusTo(5 * H, "solved", "bob"))
    solved = sum(d for dim, slot, d in moved if dim == WA and slot == Scalar.SOLVED)
    reopened = sum(d for dim, slot, d in moved if dim == WA and slot == Scalar.REOPENED)
    assert (solved, reopened) == (1, 1)
    assert figures.solve is not None and figures.solve.full_resolution_s == 5 * 3600
    # new 0-1 h, open 2-3 h and 4-5 h: three hours of requester wait.
    assert figures.solve.requester_wait_s == 3 * 3600


def test_time_in_pending_is_agent_wait() -> None:
    figures, _ = _run(Created(0, "widget"), StatusTo(H, "pending"), StatusTo(3 * H, "open"),
                      StatusTo(4 * H, "solved"))
    assert figures.solve is not None
    assert (figures.solve.agent_wait_s, figures.solve.requester_wait_s) == (7200, 7200)


def test_a_new_rating_replaces_the_old_one() -> None:
    _, moved = _run(Created(0, "whatsapp"), Rated(H, 2), Rated(2 * H, 5), Rated(3 * H, 5))
    net: dict[int, int] = {}
    for _, slot, delta in moved:
        net[slot] = net.get(slot, 0) + delta
    assert net[Scalar.RATINGS] == 1 and net[Scalar.POSITIVE] == 1
    assert net[Scalar.RATING_2] == 0 and net[Scalar.RATING_5] == 1


def test_facts_before_the_opening_and_a_repeated_opening_count_nothing() -> None:
    assert _run(PublicReply(0, "alice"))[1] == []
    figures, _ = _run(Created(0, "whatsapp"))
    assert step(figures, Created(0, "whatsapp"))[1] == []


def test_figures_survive_the_store() -> None:
    figures, _ = _run(Created(5, "whatsapp"), PublicReply(H, "al ice"),
                      StatusTo(2 * H, "solved", "al ice"), Rated(3 * H, 4))
    assert figures_from_fields(figures_to_fields(figures)) == figures


@pytest.mark.parametrize(("hist", "q", "expected"), [
    ([], 0.5, None), ([0, 2], 0.5, round(bucket_value(1), 1)),
    ([1, 0, 0, 1], 0.5, 0.0), ([1, 0, 0, 1], 0.9, round(bucket_value(3), 1)),
])
def test_quantiles(hist: list[int], q: float, expected: float | None) -> None:
    assert quantile(hist, q) == expected


@pytest.mark.parametrize(("args", "expected"), [
    ((0, 0, 0, 0), None), ((4, 2, 0, 0), 50.0), ((0, 0, 4, 3), 75.0), ((3, 2, 2, 2), 83.3),
])
def test_quality_index(args: tuple[int, int, int, int], expected: float | None) -> None:
    assert quality_index(*args) == expected


def test_a_period_reads_whole_days_inside_and_hours_at_the_edges() -> None:
    reading = plan(23 * H, (24 * 3 + 1) * H)  # from 23:00 on day 0 to 01:00 on day 3
    assert reading.days == [1, 2]
    assert reading.hours == [23, 72]
