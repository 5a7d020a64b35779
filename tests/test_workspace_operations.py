"""The operations page (admins): queues, workers, consumers' lag, failed jobs with retry,
the local outbox."""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from bridge.jobs import QUEUE_OUTBOUND, SEND_OUTBOUND
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.workspace_support import sign_in


def _failed_send(connection: redis.Redis) -> str:
    queue = Queue(QUEUE_OUTBOUND, connection=connection, serializer=JSONSerializer)
    job = queue.enqueue(SEND_OUTBOUND, {"ticket_id": "7", "event_id": "1-0"})
    queue.remove(job.id)
    job.set_status(JobStatus.FAILED)
    error = "workers.tasks.SendFailed: 21211 invalid To"
    queue.failed_job_registry.add(job, exc_string=error)
    Result.create_failure(job, 600, error)
    return job.id


async def test_an_admin_reads_the_queues_and_retries_a_failed_send(
        client: Client, sync_redis: redis.Redis) -> None:
    job_id = _failed_send(sync_redis)
    csrf = await sign_in(client, ADMIN_TOKEN)
    html = await (await client.get("/app/operations")).text()
    assert 'id="queues"' in html and 'id="workers">0<' in html
    assert "SendFailed: 21211 invalid To" in html and job_id in html
    for consumer in ("jobs", "repair", "reports"):
        assert f'<th scope="row">{consumer}</th>' in html
    retried = await client.post("/app/operations/retry",
                                data={"job_id": job_id, "csrf_token": csrf})
    assert f"Requeued {job_id}" in await retried.text()
    queue = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer)
    assert job_id in queue.job_ids and job_id not in queue.failed_job_registry.get_job_ids()
    again = await client.post("/app/operations/retry",
                              data={"job_id": job_id, "csrf_token": csrf})
    assert "not among the failed jobs" in await again.text()


async def test_agents_do_not_see_operations(client: Client, sync_redis: redis.Redis) -> None:
    job_id = _failed_send(sync_redis)
    csrf = await sign_in(client, AGENT_TOKEN)
    assert (await client.get("/app/operations")).status == 403
    refused = await client.post("/app/operations/retry",
                                data={"job_id": job_id, "csrf_token": csrf})
    assert refused.status == 403
    queue = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer)
    assert job_id in queue.failed_job_registry.get_job_ids()
