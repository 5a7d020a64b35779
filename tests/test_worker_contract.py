"""Workers run only the contract's jobs (security review, issue 8, finding 4): a job naming
another function, written to Redis by whoever can reach it, fails without anything being
imported or run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bridge.jobs import QUEUE_HOUSEKEEPING, QUEUE_OUTBOUND, SWEEP_UNSENT
from tests.test_pool import run_burst_worker


def _job(connection: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)


@pytest.mark.parametrize("fork", [False, True], ids=["in-process", "forking"])
def test_a_job_outside_the_contract_is_refused_and_not_run(
        redis_url: str, sync_redis: redis.Redis, tmp_path: Path, fork: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "ran"
    queue = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer)
    queue.enqueue("os.system", f"touch {marker}", job_id="evil")
    caplog.set_level(logging.INFO)
    assert run_burst_worker(redis_url, fork=fork) == 0
    assert not marker.exists()
    job = _job(sync_redis, "evil")
    assert job.get_status() == JobStatus.FAILED
    exc = job.latest_result().exc_string or ""  # type: ignore[union-attr]
    assert exc.startswith("refused: function 'os.system'")
    assert sync_redis.llen(queue.intermediate_queue_key) == 0
    assert any("refused job evil" in r.getMessage() and "os.system" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)


def test_a_refused_job_imports_nothing_and_is_not_retried(
        redis_url: str, sync_redis: redis.Redis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "i8_canary_module.py").write_text("def run(payload):\n    return payload\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    queue = Queue(QUEUE_HOUSEKEEPING, connection=sync_redis, serializer=JSONSerializer)
    queue.enqueue("i8_canary_module.run", {"x": 1}, job_id="canary",
                  retry=Retry(max=3, interval=[1]))
    assert run_burst_worker(redis_url) == 0
    assert "i8_canary_module" not in sys.modules
    job = _job(sync_redis, "canary")
    assert job.get_status() == JobStatus.FAILED


def test_a_contract_job_with_a_callback_is_refused(
        redis_url: str, sync_redis: redis.Redis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # RQ imports and calls a job's callbacks by dotted name too.
    (tmp_path / "i8_callback_canary.py").write_text("def hook(*args):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    queue = Queue(QUEUE_HOUSEKEEPING, connection=sync_redis, serializer=JSONSerializer)
    queue.enqueue(SWEEP_UNSENT, {"interval_s": 60}, job_id="with-callback",
                  on_failure=Callback("i8_callback_canary.hook"))
    assert run_burst_worker(redis_url) == 0
    assert "i8_callback_canary" not in sys.modules
    job = _job(sync_redis, "with-callback")
    assert job.get_status() == JobStatus.FAILED
    exc = job.latest_result().exc_string or ""  # type: ignore[union-attr]
    assert exc.startswith("refused: callbacks")
