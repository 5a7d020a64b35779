"""`python -m workers` as the Procfile runs it: a real process (forking HerokuWorker with the
scheduler) against a real Redis and the Twilio stub, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis
import redis.asyncio

from bridge.jobs import JobQueues
from bridge.store.outbox import Outbox
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.factories import routed_reply
from tests.faults.workers_support import (
    ROOT,
    WorkerProcess,
    in_store,
    wait_until,
    worker_env,
)
from tests.stubs.twilio_stub import run_in_thread
from tests.test_outbound_e2e import BODY, CUSTOMER, STATUS_URL, fields

pytestmark = pytest.mark.slow


class Spawn(Protocol):
    def __call__(self, env: dict[str, str], *args: str) -> WorkerProcess: ...


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *args: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def test_worker_sends_through_twilio_and_finishes_its_job_on_sigterm(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path,
    spawn: Spawn,
) -> None:
    # Twilio answers slowly, so SIGTERM arrives while the job is inside the API call.
    with run_in_thread(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency_s=1.0) as stub:
        worker = spawn(worker_env(
            redis_url, tmp_path, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_WHATSAPP_FROM="whatsapp:+14155238886", TWILIO_API_URL=stub.url))
        tid, eid = in_store(redis_url, lambda s: routed_reply(s, BODY))
        JobQueues(sync_redis).send_outbound(tid, eid)

        def state() -> dict[str, str]:
            return in_store(redis_url, lambda s: s.delivery_state(tid, eid))

        wait_until(lambda: state().get("state") == "sending", "the send attempt",
                   timeout_s=30, interval_s=0.05, workers=[worker])
        code = worker.stop()

        assert code == 0, worker.output()
        # Warm shutdown: the job in flight was finished and recorded before the exit.
        final = state()
        assert final["state"] == "queued", worker.output()
        [request] = stub.messages
        assert final["provider_id"] == request.sid
        assert fields(request) == {"To": [CUSTOMER], "From": ["whatsapp:+14155238886"],
                                   "Body": [BODY], "StatusCallback": [STATUS_URL]}
        assert stub.invalid == []
    log = worker.output()
    assert "outbound messages go to Twilio at http://127.0.0.1:" in log
    assert "worker stopped" in log
    assert "+33612345678" not in log  # addresses are masked


def test_in_process_worker_without_twilio_credentials_fills_the_outbox(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path,
    spawn: Spawn,
) -> None:
    worker = spawn(worker_env(redis_url, tmp_path), "--no-fork")
    tid, eid = in_store(redis_url, lambda s: routed_reply(s, BODY))
    JobQueues(sync_redis).send_outbound(tid, eid)

    wait_until(lambda: in_store(redis_url, lambda s: s.delivery_state(tid, eid)).get("state")
               == "delivered", "the outbox delivery", timeout_s=30, workers=[worker])
    assert worker.stop() == 0, worker.output()

    entries = in_store(redis_url, lambda s: Outbox(s.redis).latest())
    assert [(e.provider_id, e.to, e.body, e.ticket_id) for e in entries] == [
        ("OUTBOX-1", CUSTOMER, BODY, tid)]
    assert "the local outbox" in worker.output()


def test_worker_refuses_to_start_without_redis_url(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "workers"], cwd=ROOT,
                          env=worker_env(None, tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "REDIS_URL is not set" in done.stderr
    assert "Traceback" not in done.stderr


def _worker_pids(connection: redis.Redis) -> set[int]:
    from rq import Worker

    return {w.pid for w in Worker.all(connection=connection) if w.pid}


def test_supervisor_runs_k_workers_respawns_a_dead_one_and_stops_them_all(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path, spawn: Spawn,
) -> None:
    pool = spawn(worker_env(redis_url, tmp_path), "--processes", "3")
    wait_until(lambda: len(_worker_pids(sync_redis)) == 3, "3 registered workers",
               timeout_s=30, workers=[pool])
    first = _worker_pids(sync_redis)
    assert pool.process.pid not in first  # the supervisor itself takes no job
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(_worker_pids(sync_redis) - first) == 1, "a replacement worker",
               timeout_s=30, workers=[pool])
    survivors = _worker_pids(sync_redis) - {victim}
    assert pool.stop() == 0, pool.output()
    for pid in survivors:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
