"""bench/views.py runs end to end on small sizes (its figures are for `python -m bench`)."""

from __future__ import annotations

from pathlib import Path

from bench import views
from bench.report import Context


def test_views_bench_smoke(tmp_path: Path) -> None:
    ctx = Context(workdir=tmp_path, docs_dir=tmp_path, log=lambda _: None)
    rows = views.run(ctx, views.SMOKE)
    assert [r.bench for r in rows] == ["views"] * len(views.VIEWS)
    assert all(r.value > 0 and r.ratio is not None for r in rows)
    assert "Saved view details" in ctx.sections[0].title
