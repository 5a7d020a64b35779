"""What the ingest benchmark reads between and after its load phases: the messages stored
and the relay's progress (from Redis), Redis's forks, and the web process's event-loop
probes (from its /metrics)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import redis
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from bridge.store import keys
from bridge.store.changelog import RELAY_CONSUMER, ChangeLog, Lag


def count_stored(url: str) -> tuple[int, int, int]:
    """(customer_message events, distinct provider ids, ticket streams) in Redis."""
    client = redis.Redis.from_url(url)
    count = streams = 0
    sids: set[str] = set()
    try:
        for key in client.scan_iter(match=keys.EVENT_STREAMS_GLOB, count=1000):
            streams += 1
            start = "-"
            while True:
                batch = client.xrange(key, start, "+", count=2000)
                for _eid, fields in batch:
                    if fields.get(b"type") == b"customer_message":
                        count += 1
                        sids.add(json.loads(fields.get(b"data", b"{}")).get("provider_id", ""))
                if len(batch) < 2000:
                    break
                start = "(" + batch[-1][0].decode()
    finally:
        client.close()
    return count, len(sids), streams


def relay_lag(url: str) -> Lag:
    """The change log entries the relay has not handed on, and the age of the oldest."""

    async def lag() -> Lag:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return await ChangeLog(client).lag(RELAY_CONSUMER)
        finally:
            await client.aclose()

    return asyncio.run(lag())


def wait_for_relay(url: str, timeout_s: float) -> tuple[int, float]:
    """(change log entries the relay has not handed on, seconds waited): polls until none
    is left or timeout_s passed."""
    t0 = time.monotonic()
    while True:
        left = relay_lag(url).events
        waited = time.monotonic() - t0
        if left == 0 or waited > timeout_s:
            return left, waited
        time.sleep(0.2)


def redis_forks(url: str) -> int:
    """How many times Redis has forked since it started (AOF rewrites, here)."""
    with redis.Redis.from_url(url) as client:
        return int(client.info("stats")["total_forks"])


def loop_lag_buckets(port: int, metrics_token: str) -> dict[float, float]:
    """The bridge's bridge_event_loop_lag_seconds histogram: {upper bound s: count}."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": f"Bearer {metrics_token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    return {float(sample.labels["le"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "bridge_event_loop_lag_seconds"
            for sample in family.samples if sample.name.endswith("_bucket")}
