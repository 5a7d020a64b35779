"""/metrics reads the queues at scrape time: depths by state, overdue timers, workers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.jobs import QUEUE_HOUSEKEEPING, QUEUE_OUTBOUND, JobQueues
from bridge.store.embedded import free_port
from bridge.web.keys import store_key
from config.settings import Settings
from tests.conftest import METRICS_TOKEN, make_settings
from tests.faults.workers_support import work_in_process

Client = TestClient[Any, Any]
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def _samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric family in Prometheus text."""
    out = {}
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if found:
            out[found.group(1) or ""] = float(found.group(2))
    return out


async def test_queue_depths_overdue_timers_and_workers(
        aiohttp_client: Any, settings: Settings, sync_redis: redis.Redis) -> None:
    queues = JobQueues(sync_redis)
    queues.send_outbound("1", "1-0")
    queues.send_outbound("2", "2-0")
    now = datetime.now(UTC)
    queues.enqueue(QUEUE_HOUSEKEEPING, "builtins.len", {}, job_id="late",
                   at=now - timedelta(minutes=2))  # no scheduler moved it: overdue
    queues.enqueue(QUEUE_HOUSEKEEPING, "builtins.len", {}, job_id="later",
                   at=now + timedelta(hours=1))
    queues.enqueue(QUEUE_HOUSEKEEPING, "builtins.int", {"not": "a number"}, job_id="bad")
    work_in_process(sync_redis, [QUEUE_HOUSEKEEPING])  # "bad" fails

    client: Client = await aiohttp_client(create_app(settings))
    text = await (await client.get("/metrics", headers=SCRAPER)).text()
    jobs = _samples(text, "bridge_jobs")
    assert jobs['{queue="bridge-outbound",state="queued"}'] == 2
    assert jobs['{queue="bridge-housekeeping",state="scheduled"}'] == 2
    assert jobs['{queue="bridge-housekeeping",state="failed"}'] == 1
    assert jobs['{queue="bridge-housekeeping",state="queued"}'] == 0
    assert jobs['{queue="bridge-outbound",state="dequeuing"}'] == 0
    overdue = _samples(text, "bridge_jobs_overdue")
    assert overdue == {'{queue="bridge-events"}': 0, '{queue="bridge-housekeeping"}': 1,
                       '{queue="bridge-outbound"}': 0, '{queue="bridge-surveys"}': 0}
    assert _samples(text, "bridge_redis_up") == {"": 1}
    assert _samples(text, "bridge_workers") == {"": 0}  # the burst worker has left
    assert QUEUE_OUTBOUND in text


async def test_without_redis_the_scrape_still_answers(aiohttp_client: Any) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0")
    client: Client = await aiohttp_client(create_app(settings))
    answer = await client.get("/metrics", headers=SCRAPER)
    assert answer.status == 200
    text = await answer.text()
    assert _samples(text, "bridge_redis_up") == {"": 0}
    assert _samples(text, "bridge_jobs") == {}
    assert "bridge_http_requests_total" in text


async def test_relay_lag_is_shown_until_the_relay_hands_the_changes_on(
        aiohttp_client: Any, settings: Settings, sync_redis: redis.Redis) -> None:
    from tests.factories import inbound
    from tests.relay_support import relay_all

    client: Client = await aiohttp_client(create_app(settings))
    app_store = client.app[store_key]
    for n in range(3):
        await inbound(app_store, address=f"whatsapp:+3361111000{n}")
    text = await (await client.get("/metrics", headers=SCRAPER)).text()
    jobs = '{consumer="jobs"}'
    assert _samples(text, "bridge_relay_lag_events")[jobs] == 3
    assert _samples(text, "bridge_relay_lag_seconds")[jobs] >= 0
    await relay_all(app_store.redis, sync_redis)
    text = await (await client.get("/metrics", headers=SCRAPER)).text()
    assert _samples(text, "bridge_relay_lag_events")[jobs] == 0
    assert _samples(text, "bridge_relay_lag_seconds")[jobs] == 0
