"""RQ's scheduler child and stop signals: a SIGTERM that reaches the child in its first
instructions after fork() (a worker stopped right after it started, on a busy machine) is
a normal stop of the scheduler, never an exception that unwinds the child into a copy of
the worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest
import redis
from rq import Worker

import workers.scheduler
from tests.conftest import make_settings
from workers.__main__ import InProcessWorker, build_worker

_STRAY_CHILD_EXIT = 99
# os.register_at_fork hooks cannot be removed: this one acts only while a test arms it.
_armed_for_parent: list[int] = []


def _signal_the_new_child() -> None:
    if _armed_for_parent and os.getppid() == _armed_for_parent[0]:
        _armed_for_parent.clear()
        os.kill(os.getpid(), signal.SIGTERM)  # pending before the child runs any code


os.register_at_fork(after_in_child=_signal_the_new_child)


class _StaleHandlerStop(Exception):
    pass


def _stale_worker_handler(signum: int, frame: FrameType | None) -> None:
    raise _StaleHandlerStop  # what RQ's worker handler does when idle: raise StopRequested


@pytest.fixture
def stop_signal_at_fork() -> Iterator[None]:
    """The next fork's child gets a SIGTERM at once, and inherits a handler that raises
    (RQ's worker handlers stay installed after a worker ends, in the scheduler's parent)."""
    previous = signal.signal(signal.SIGTERM, _stale_worker_handler)
    _armed_for_parent.append(os.getpid())
    try:
        yield
    finally:
        _armed_for_parent.clear()
        signal.signal(signal.SIGTERM, previous)


def _quit_after_start(self: InProcessWorker, burst: bool) -> None:
    raise redis.ConnectionError("Redis went away")  # the worker quits at once


def _exit_code_of_scheduler_after_quick_quit(redis_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> int | None:
    """A worker that starts its scheduler, quits at once and tears down; the scheduler
    child's exit code."""
    monkeypatch.setattr(InProcessWorker, "check_for_suspension", _quit_after_start)
    test_process = os.getpid()
    connection = redis.Redis.from_url(redis_url)
    try:
        worker = build_worker(connection, fork=False, settings=make_settings(redis_url))
        worker.work(burst=False, with_scheduler=True, logging_level="INFO")
    finally:
        connection.close()
        if os.getpid() != test_process:  # the child unwound into this test: end it here
            os._exit(_STRAY_CHILD_EXIT)
    assert worker.scheduler is not None and worker.scheduler._process is not None
    return worker.scheduler._process.exitcode


def test_a_stop_at_the_scheduler_childs_first_instruction_is_a_clean_stop(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        stop_signal_at_fork: None) -> None:
    # The scheduler received the stop once its own handler existed, and stopped cleanly.
    assert _exit_code_of_scheduler_after_quick_quit(redis_url, monkeypatch) == 0
    assert sync_redis.keys("rq:scheduler-lock:*") == []
    assert Worker.all(connection=sync_redis) == []


def test_a_scheduler_that_does_not_stop_is_killed_and_its_locks_released(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    def ignore_stops(self: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    monkeypatch.setattr(workers.scheduler.BridgeScheduler, "_install_signal_handlers",
                        ignore_stops)
    monkeypatch.setattr(workers.scheduler, "STOP_GRACE_S", 1.0)
    assert _exit_code_of_scheduler_after_quick_quit(redis_url, monkeypatch) == -signal.SIGKILL
    assert sync_redis.keys("rq:scheduler-lock:*") == []
