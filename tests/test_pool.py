"""The worker supervisor, in-process: a stop request that reaches a child while it is still
starting (before its own signal handlers exist) is a warm stop, not a kill."""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Worker

from tests.conftest import make_settings
from workers.__main__ import InProcessWorker, run_worker
from workers.pool import Supervisor, held_stop_signals


class _StopRightAfterFork(Supervisor):
    def _spawn(self, slot: int) -> None:
        super()._spawn(slot)
        self.stop()  # SIGTERM to the child while it is still in its start-up


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # Supervisor.run freezes the parent's objects for copy-on-write


def test_a_stop_during_start_up_is_handed_to_the_child_once_it_can_handle_it(
        tmp_path: Path) -> None:
    marker = tmp_path / "child"

    def target() -> int:
        time.sleep(0.3)  # still starting: no handler of its own yet
        stopped: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
        held = held_stop_signals()
        marker.write_text(f"held {held}, received {stopped}")
        return 0 if held == [signal.SIGTERM] else 3

    supervisor = _StopRightAfterFork(1, target, grace_s=20, poll_s=0.02)
    assert supervisor.run() == 0
    assert marker.read_text() == f"held {[int(signal.SIGTERM)]}, received []"


def test_without_a_stop_request_nothing_is_held(tmp_path: Path) -> None:
    marker = tmp_path / "child"

    def target() -> int:
        marker.write_text(f"held {held_stop_signals()}")
        return 0

    assert Supervisor(1, target, poll_s=0.02).run() == 0  # finished: not restarted
    assert marker.read_text() == "held []"


def test_an_rq_worker_stopped_while_starting_tears_down_cleanly(
        redis_url: str, sync_redis: redis.Redis) -> None:
    settings = make_settings(redis_url)

    def target() -> int:
        time.sleep(0.3)  # the stop arrives before RQ registers and installs its handlers
        connection = redis.Redis.from_url(redis_url)
        return run_worker(connection, settings, fork=False, burst=False, log_level="INFO")

    supervisor = _StopRightAfterFork(1, target, grace_s=30, poll_s=0.02)
    assert supervisor.run() == 0  # a warm stop, not a child killed by the signal
    # Teardown ran: the worker deregistered and its scheduler released the locks.
    assert Worker.all(connection=sync_redis) == []
    assert sync_redis.keys("rq:scheduler-lock:*") == []


# RQ's teardown closes its pubsub connection after waiting 1 s for the listening thread,
# which may still be reading it on a busy machine: harmless, and RQ's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_rq_worker_that_quits_on_its_own_exits_non_zero(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ's loop quits on any error outside its dequeue (Redis gone for longer than the
    connection retries): that is a failure to restart from, not a finished worker."""
    def redis_gone(self: InProcessWorker, burst: bool) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(InProcessWorker, "check_for_suspension", redis_gone)
    assert run_worker_on(redis_url, burst=False) == 1
    assert Worker.all(connection=sync_redis) == []  # it still tore down


def run_worker_on(redis_url: str, *, burst: bool, fork: bool = False,
                  **settings: object) -> int:
    """One worker on its own connection (in-process unless fork); its exit status."""
    connection = redis.Redis.from_url(redis_url)
    try:
        return run_worker(connection, make_settings(redis_url, **settings), fork=fork,
                          burst=burst, log_level="INFO")
    finally:
        connection.close()


def run_burst_worker(redis_url: str, *, fork: bool = False, **settings: object) -> int:
    """One worker until the queues are empty."""
    return run_worker_on(redis_url, burst=True, fork=fork, **settings)


def test_a_burst_worker_that_ran_out_of_jobs_exits_zero(
        redis_url: str, sync_redis: redis.Redis) -> None:
    assert run_burst_worker(redis_url) == 0
