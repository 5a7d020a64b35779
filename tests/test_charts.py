"""The workspace's duration labels and time bars (pure formatting)."""

from __future__ import annotations

import pytest

from bridge.web.workspace.charts import duration_text, time_bars


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "–"), (0, "0 s"), (42.7, "42 s"), (60, "1 min"), (3599, "59 min"),
    (3600, "1 h 00"), (3 * 3600 + 5 * 60, "3 h 05"), (2 * 86400 + 4 * 3600, "2 d 4 h"),
])
def test_duration_text(seconds: float | None, text: str) -> None:
    assert duration_text(seconds) == text


def test_time_bars_label_short_times_readably() -> None:
    svg = str(time_bars("t", "Times", [("First reply", 42.0, 7200.0), ("Solve", None, 90.0)],
                        ("median", "p90")))
    assert ">42 s<" in svg and ">2 h 00<" in svg and ">1 min<" in svg and ">–<" in svg
    assert "0.00 h" not in svg
