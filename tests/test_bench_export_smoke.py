"""bench/export.py at smoke size: the harness runs end to end and its figures are sane
(speed itself is judged by `python -m bench --only export`, not here)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import export
from bench.report import Context


@pytest.mark.slow
def test_export_bench_smoke(tmp_path: Path) -> None:
    ctx = Context(workdir=tmp_path, docs_dir=tmp_path, log=lambda m: None)
    rows = export.measure(ctx, export.SMOKE)
    assert [r.name.split(" ")[0] for r in rows] == ["deliveries/s", "p99"]
    assert all(r.value > 0 and not math.isnan(r.value) for r in rows)
    assert ctx.sections and "change to delivery" in ctx.sections[0].title
