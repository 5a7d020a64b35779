"""Dequeue from several queues in priority order through the intermediate lists, so that a
job whose pop was lost is recovered by RQ's maintenance instead of vanishing."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from rq import Queue, Retry
from rq.exceptions import DequeueTimeout
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now

from bridge.jobs import QUEUES_BY_PRIORITY
from tests.conftest import make_settings
from tests.test_pool import run_burst_worker, run_worker_on
from workers.__main__ import build_worker
from workers.dequeue import ReliableQueue

NOOP = "builtins.len"  # a job function that exists and takes one argument


def _queues(connection: redis.Redis) -> list[Queue]:
    return [ReliableQueue(name, connection=connection, serializer=JSONSerializer)
            for name in QUEUES_BY_PRIORITY]


def _dequeue(connection: redis.Redis, timeout: int | None) -> tuple[Job, Queue] | None:
    return ReliableQueue.dequeue_any(_queues(connection), timeout, connection=connection,
                                     serializer=JSONSerializer)


def test_jobs_come_in_queue_priority_order_through_the_intermediate_lists(
        sync_redis: redis.Redis) -> None:
    outbound, _, surveys, housekeeping = _queues(sync_redis)
    late = housekeeping.enqueue(NOOP, "h", job_id="h")
    survey = surveys.enqueue(NOOP, "s", job_id="s")
    reply = outbound.enqueue(NOOP, "o", job_id="o")
    order = []
    for _ in range(3):
        result = _dequeue(sync_redis, None)
        assert result is not None
        job, queue = result
        order.append(job.id)
        # Until it starts, the job is kept in its queue's intermediate list, not lost.
        assert sync_redis.lrange(queue.intermediate_queue_key, 0, -1) == [job.id.encode()]
        sync_redis.delete(queue.intermediate_queue_key)
    assert order == [reply.id, survey.id, late.id]
    assert _dequeue(sync_redis, None) is None


def test_an_idle_dequeue_times_out_and_wakes_for_any_queue(sync_redis: redis.Redis) -> None:
    with pytest.raises(DequeueTimeout):
        _dequeue(sync_redis, 1)
    housekeeping = _queues(sync_redis)[-1]
    later = threading.Timer(0.3, lambda: housekeeping.enqueue(NOOP, "x", job_id="late"))
    later.start()
    try:
        result = _dequeue(sync_redis, 10)  # blocks on the first queue, polls the others
    finally:
        later.join()
    assert result is not None and result[0].id == "late"


def test_a_job_that_ran_leaves_no_intermediate_entry(redis_url: str,
                                                     sync_redis: redis.Redis) -> None:
    for queue in _queues(sync_redis):
        queue.enqueue(NOOP, queue.name, job_id=f"job-{queue.name}")
    assert run_burst_worker(redis_url, worker_extra_jobs=(NOOP,)) == 0
    for queue in _queues(sync_redis):
        job = Job.fetch(f"job-{queue.name}", connection=sync_redis, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.FINISHED
        assert sync_redis.llen(queue.intermediate_queue_key) == 0


def test_a_job_whose_pop_was_lost_is_retried_by_maintenance(sync_redis: redis.Redis) -> None:
    """The pop's reply never reached the worker: the id sits in the intermediate list, in no
    registry. With RQ's own multi-queue BLPOP it would be in no list at all."""
    outbound = _queues(sync_redis)[0]
    job = outbound.enqueue(NOOP, "reply", job_id="send-1", retry=Retry(max=3, interval=[5]))
    assert _dequeue(sync_redis, None) is not None  # ...and the reply is lost
    assert outbound.count == 0
    assert sync_redis.lrange(outbound.intermediate_queue_key, 0, -1) == [b"send-1"]

    worker = build_worker(sync_redis, fork=False, settings=make_settings())
    outbound.intermediate_queue.cleanup(worker, outbound)  # first seen now
    assert job.get_status() == JobStatus.QUEUED
    # A minute later it still has not started: failed, and its Retry runs it again.
    first_seen = outbound.intermediate_queue.get_first_seen_key("send-1")
    sync_redis.set(first_seen, (now() - timedelta(minutes=2)).timestamp())
    outbound.intermediate_queue.cleanup(worker, outbound)
    assert sync_redis.llen(outbound.intermediate_queue_key) == 0
    assert job.get_status() == JobStatus.SCHEDULED
    scheduled = ScheduledJobRegistry(outbound.name, connection=sync_redis,
                                     serializer=JSONSerializer)
    assert scheduled.get_job_ids() == ["send-1"]
    assert Job.fetch("send-1", connection=sync_redis, serializer=JSONSerializer
                     ).retries_left == 2


@pytest.fixture
def stop_handlers_restored() -> Iterator[None]:
    """The worker installs its own SIGTERM/SIGINT handlers in this (the main) thread."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _sigterm_after_a_take(monkeypatch: pytest.MonkeyPatch, *, when_empty: bool) -> None:
    """A deploy's SIGTERM lands just as an LMOVE's reply comes back (with a job, or empty)."""
    lmove = ReliableQueue.lmove.__func__  # type: ignore[attr-defined]

    def lmove_then_sigterm(cls: type[ReliableQueue], connection: redis.Redis, key: str,
                           timeout: int | None) -> Any:
        result = lmove(cls, connection, key, timeout)
        if (result is None) == when_empty:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the return
        return result

    monkeypatch.setattr(ReliableQueue, "lmove", classmethod(lmove_then_sigterm))


@pytest.mark.usefixtures("stop_handlers_restored")
def test_a_stop_while_a_job_is_taken_runs_that_job_then_stops(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ raised StopRequested there: the job Redis had moved stayed in the intermediate
    list, sent a minute or two later by maintenance (4 of 13 outbound benchmark runs)."""
    outbound = _queues(sync_redis)[0]
    for n in (1, 2):
        outbound.enqueue(NOOP, "reply", job_id=f"send-{n}")
    _sigterm_after_a_take(monkeypatch, when_empty=False)
    assert run_burst_worker(redis_url, worker_extra_jobs=(NOOP,)) == 0
    first, second = (Job.fetch(f"send-{n}", connection=sync_redis, serializer=JSONSerializer)
                     for n in (1, 2))
    assert first.get_status() == JobStatus.FINISHED
    assert sync_redis.llen(outbound.intermediate_queue_key) == 0
    assert second.get_status() == JobStatus.QUEUED  # stopped after the job it held
    assert outbound.get_job_ids() == ["send-2"]


@pytest.mark.usefixtures("stop_handlers_restored")
def test_a_stop_while_idle_still_stops_without_taking_a_job(
        redis_url: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a burst: the worker would wait for jobs; the stop ends it at the next empty
    LMOVE."""
    _sigterm_after_a_take(monkeypatch, when_empty=True)
    assert run_worker_on(redis_url, burst=False) == 0
    assert all(sync_redis.llen(q.intermediate_queue_key) == 0 for q in _queues(sync_redis))


def test_a_maintenance_pass_cut_short_leaves_no_lock_past_the_next_pass(
        sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection dropped in the middle of a pass: RQ's own lock on that queue would keep
    every worker from cleaning it (and recovering its stranded jobs) for 899 s."""
    worker = build_worker(sync_redis, fork=False,
                          settings=make_settings(worker_maintenance_interval_s=5))

    def dropped(self: IntermediateQueue, worker: object, queue: Queue) -> None:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(IntermediateQueue, "cleanup", dropped)
    with pytest.raises(redis.ConnectionError):
        worker.clean_registries()
    outbound = worker.queues[0]
    assert 0 < sync_redis.ttl(outbound.registry_cleaning_key) <= 4
    assert sync_redis.exists(worker.queues[1].registry_cleaning_key) == 0  # not reached

    monkeypatch.undo()
    sync_redis.delete(outbound.registry_cleaning_key)  # expired, as by the next pass
    job = outbound.enqueue(NOOP, "reply", job_id="send-1")
    assert _dequeue(sync_redis, None) is not None  # ...and the reply is lost
    worker.clean_registries()
    assert outbound.intermediate_queue.get_first_seen("send-1") is not None
    assert job.get_status() == JobStatus.QUEUED
    assert all(sync_redis.exists(q.registry_cleaning_key) == 0 for q in worker.queues)


class _StopWaiting(Exception):
    pass


@pytest.mark.parametrize("fork", [True, False])
def test_waits_between_attempts_on_a_failing_redis_stay_short(
        sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch, fork: bool) -> None:
    """RQ doubles its wait up to 60 s while Redis fails; ours stops at 4 s, so a worker
    resumes sending soon after Redis is back."""
    import rq.worker.base

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 7:
            raise _StopWaiting

    def connection_lost(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(rq.worker.base.time, "sleep", sleep)
    worker = build_worker(sync_redis, fork=fork, settings=make_settings())
    monkeypatch.setattr(worker, "queue_class",
                        type("Failing", (ReliableQueue,), {"dequeue_any": connection_lost}))
    with pytest.raises(_StopWaiting):
        worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert waits == [1, 2, 4, 4, 4, 4, 4]
