"""bench/reports.py at toy sizes: it runs end to end and its rows are well formed (no timing
asserted)."""

from __future__ import annotations

import math
from pathlib import Path

from bench import reports


def test_reports_bench_smoke(tmp_path: Path) -> None:
    outcome = reports.measure(reports.SMOKE, tmp_path)
    small, big = outcome.created
    assert 0 < small < big <= reports.SMOKE.big
    for row in reports.rows(outcome, reports.SMOKE):
        assert row.bench == "reports" and math.isfinite(row.value) and row.baseline
