"""A render helper ignores Ctrl-C's SIGINT (the terminal sends it to every process of the
group): no KeyboardInterrupt traceback per helper, and it stops when its parent closes it."""

from __future__ import annotations

import os
import signal
from dataclasses import asdict

from bridge.render_helpers import _Helper
from bridge.sandbox import Limits


def test_a_helper_survives_sigint_quietly_and_stops_when_closed() -> None:
    helper = _Helper()
    try:
        request = {"sources": {"a": "Bonjour {{ name }}"}, "context": {"name": "Awa"},
                   "limits": asdict(Limits())}
        assert helper.ask(request, 30) == [["ok", "a", "Bonjour Awa"]]  # up and serving
        os.kill(helper.proc.pid, signal.SIGINT)
        # Still serving after the signal (it was not raised as KeyboardInterrupt).
        assert helper.ask(request, 30) == [["ok", "a", "Bonjour Awa"]]
    finally:
        helper.close()
    assert helper.proc.returncode == 0
