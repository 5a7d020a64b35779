"""Small statistics helpers shared by the benchmarks (no numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest-rank method."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """mean/p50/p90/p99/p999/max of durations given in seconds, returned in milliseconds."""
    values = sorted(s * 1000 for s in seconds)
    if not values:
        return {"n": 0, "mean": math.nan, "p50": math.nan, "p90": math.nan, "p99": math.nan,
                "p999": math.nan, "max": math.nan}
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "p999": percentile(values, 99.9),
        "max": values[-1],
    }
