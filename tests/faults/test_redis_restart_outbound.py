"""Redis killed (SIGKILL) and restarted, with AOF everysec, while workers send replies.

`python -m workers --processes 4` sends through the Twilio stub (answering in 0.2 s) while
redis-server is killed and started again three times. Expected: every reply ends accepted by
Twilio exactly once or visibly failed on its ticket, none is lost or sent twice, and the
workers carry on without anyone restarting them.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from bridge.jobs import JobQueues
from bridge.store.embedded import EmbeddedRedis
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.faults.test_worker_faults import deliveries, open_tickets_with_replies, settled
from tests.faults.workers_support import (
    WorkerProcess,
    in_store,
    sending_worker_env,
    wait_until,
)
from tests.stubs.twilio_stub import run_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SENDS = 300
PROCESSES = 4
LATENCY_S = 0.2
RESTARTS = 3
DOWN_S = 0.5


def test_workers_ride_out_redis_restarts_without_losing_or_doubling_a_send(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    worker: WorkerProcess | None = None
    try:
        url = server.url
        with run_in_thread(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                           latency_s=LATENCY_S) as stub:
            env = sending_worker_env(url, tmp_path, stub.url)
            sends = in_store(url, lambda s: open_tickets_with_replies(s, SENDS))
            connection = redis.Redis.from_url(url)
            queues = JobQueues(connection)
            for tid, eid in sends:
                queues.send_outbound(tid, eid)
            connection.close()
            worker = WorkerProcess(env, tmp_path / "workers.log",
                                   args=["--processes", str(PROCESSES)])

            # Kill Redis at a quarter, half and three quarters of the sends.
            for n in range(1, RESTARTS + 1):
                wait_until(lambda n=n: stub.accepted >= SENDS * n // (RESTARTS + 1),
                           f"{n} quarter(s) of the sends", timeout_s=60, interval_s=0.02,
                           workers=[worker])
                assert server.process is not None
                server.process.kill()
                server.process.wait()
                time.sleep(DOWN_S)
                server.start()

            wait_until(lambda: all(settled(s) for s in deliveries(url, sends)),
                       "every reply sent or visibly failed", timeout_s=150, interval_s=0.5,
                       workers=[worker])
            final = deliveries(url, sends)
            messages = stub.messages
            assert stub.invalid == []
        log = worker.output()
    finally:
        if worker is not None:
            worker.close()
        server.stop()

    bodies = Counter(m.get("Body") for m in messages)
    duplicates = sum(n - 1 for n in bodies.values() if n > 1)
    sent = sum(bool(s.get("provider_id")) and s.get("state") != "failed" for s in final)
    failed = Counter(s.get("error_code", "") for s in final if s.get("state") == "failed")
    respawned = log.count("starting another in")
    print(f"\n{SENDS} replies, {PROCESSES} worker processes, Redis SIGKILLed and restarted "
          f"{RESTARTS} times: {sent} sent, {sum(failed.values())} visibly failed "
          f"({dict(failed) or '-'}), 0 lost, duplicates at the stub: {duplicates} "
          f"({len(messages)} messages for {len(bodies)} replies); worker processes "
          f"restarted by the supervisor: {respawned}")
    assert duplicates == 0, [body for body, n in bodies.items() if n > 1]
    assert sent + sum(failed.values()) == SENDS, [s for s in final if not s.get("provider_id")]
    assert not failed, f"a Redis restart made sends fail: {failed}"
