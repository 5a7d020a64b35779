"""The ingest benchmark's ratios pair each round's measurement with the baseline of the
same round and report the median round (bench/ingest_report.py: median_pair): a spell when
the shared machine ran fast or slow moves one round, not the figure."""

from __future__ import annotations

import pytest

from bench.ingest_report import median_pair
from bench.loadgen import LoadResult


def _closed(rate: float) -> LoadResult:
    return LoadResult(mode="closed", offered_rate=0, concurrency=64, sent=0, ok=0,
                      statuses={}, failures={}, dropped=0, window_s=4.0, window_ok=0,
                      window_errors=0, rate=rate, latency_ms={}, pool_exhausted=False,
                      cpu_percent={}, generation_s=0.0)


@pytest.mark.parametrize(("measured", "reference", "expected"), [
    # A run on this machine: a fast first round for the baseline and the appends.
    ([4174, 1634, 1781], [15940, 4866, 5876], (1781, 5876)),  # ratios .26 .34 .30
    ([1144, 1264, 1224], [15940, 4866, 5876], (1224, 5876)),  # ratios .07 .26 .21
    ([1000], [4000], (1000, 4000)),
    ([100, 300], [1000, 1000], (300, 1000)),  # two rounds: the upper of the two
])
def test_the_median_rounds_pair_is_reported(measured: list[float], reference: list[float],
                                            expected: tuple[float, float]) -> None:
    got = median_pair([_closed(r) for r in measured], [_closed(r) for r in reference])
    assert (got[0].rate, got[1].rate) == expected


def test_rounds_must_pair_up() -> None:
    with pytest.raises(ValueError):
        median_pair([_closed(1), _closed(2)], [_closed(1)])


def test_loop_lag_summary_reads_a_rounds_probe_counts() -> None:
    from bench.ingest_report import loop_lag_summary

    inf = float("inf")
    # 100 probes: 90 within 5 ms, 6 within 10 ms, 3 within 50 ms, 1 within 250 ms.
    buckets = {0.005: 90.0, 0.01: 96.0, 0.025: 98.0, 0.05: 99.0, 0.1: 99.0, 0.25: 100.0,
               0.5: 100.0, 10.0: 100.0, inf: 100.0}
    assert loop_lag_summary(buckets) == (100, 4, 1, "≤ 250 ms")
    assert loop_lag_summary({0.005: 3.0, 0.01: 3.0, inf: 3.0}) == (3, 0, 0, "≤ 5 ms")
    assert loop_lag_summary({0.005: 0.0, 10.0: 1.0, inf: 2.0}) == (2, 2, 2, "> 10 s")
    assert loop_lag_summary({inf: 0.0}) == (0, 0, 0, "—")
