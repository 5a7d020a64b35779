"""The worker supervisor, in-process: a stop request that reaches a child while it is still
starting (before its own signal handlers exist) is a warm stop, not a kill."""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.pool import Supervisor, release_stop_signals


class _StopRightAfterFork(Supervisor):
    def _spawn(self, slot: int) -> None:
        super()._spawn(slot)
        self.stop()  # SIGTERM to the child while it is still in its start-up


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # Supervisor.run freezes the parent's objects for copy-on-write


def _slow_starting_target(marker: Path) -> int:
    time.sleep(0.3)  # still starting: the handler below does not exist yet
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    release_stop_signals()
    deadline = time.monotonic() + 10
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    marker.write_text("stopped by its own handler" if stopped else "never told to stop")
    return 0 if stopped else 3


def test_stop_during_start_up_reaches_the_childs_own_handler(tmp_path: Path) -> None:
    marker = tmp_path / "child"
    supervisor = _StopRightAfterFork(1, lambda: _slow_starting_target(marker),
                                     grace_s=20, poll_s=0.02)
    assert supervisor.run() == 0
    assert marker.read_text() == "stopped by its own handler"


def test_without_a_stop_request_nothing_is_released(tmp_path: Path) -> None:
    marker = tmp_path / "child"

    def target() -> int:
        received: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
        release_stop_signals()
        marker.write_text(f"signals received: {len(received)}")
        return 0

    assert Supervisor(1, target, poll_s=0.02).run() == 0  # finished: not restarted
    assert marker.read_text() == "signals received: 0"
