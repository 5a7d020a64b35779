"""Connection-pool exhaustion and SIGTERM of the web process under load."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from urllib.parse import urlencode

import httpx
import redis

from bridge.store.embedded import EmbeddedRedis
from tests.factories import inbound_form, sign
from tests.faults.conftest import start_web


def _headers(form: dict[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign("/webhooks/twilio", form)}


def _stored_sids(url: str) -> Counter[str]:
    import json

    client = redis.Redis.from_url(url)
    stored: Counter[str] = Counter()
    for key in client.scan_iter(match="{c:*}:t:*:events", count=1000):
        for _, fields in client.xrange(key):
            if fields[b"type"] == b"customer_message":
                stored[json.loads(fields[b"data"])["provider_id"]] += 1
    return stored


def test_pool_exhaustion_answers_503_quickly_then_recovers(aof_redis: EmbeddedRedis) -> None:
    web = start_web(aof_redis.url, REDIS_MAX_CONNECTIONS="2")
    admin = redis.Redis.from_url(aof_redis.url)
    forms = [inbound_form(f"burst {n}", sender=f"whatsapp:+3362000{n:04d}") for n in range(60)]
    try:
        async def burst() -> tuple[Counter[int], float]:
            async with httpx.AsyncClient(base_url=web.url, timeout=30,
                                         limits=httpx.Limits(max_connections=100)) as client:
                # Redis stops answering writes for 4 s: the two pooled connections hang
                # and every other request must give up on the pool instead of hanging.
                admin.execute_command("CLIENT", "PAUSE", "4000", "WRITE")
                started = time.monotonic()
                answers = await asyncio.gather(*(
                    client.post("/webhooks/twilio", content=urlencode(f), headers=_headers(f))
                    for f in forms))
                return Counter(a.status_code for a in answers), time.monotonic() - started

        statuses, elapsed = asyncio.run(burst())
        admin.execute_command("CLIENT", "UNPAUSE")
        print(f"\nburst of {len(forms)} with a 2-connection pool and Redis paused: "
              f"{dict(statuses)} in {elapsed:.2f} s")
        assert statuses[503] > 0
        assert set(statuses) <= {200, 503}

        # Twilio retries the refused ones: everything lands exactly once.
        with httpx.Client(base_url=web.url, timeout=10) as client:
            for form in forms:
                assert client.post("/webhooks/twilio", content=urlencode(form),
                                   headers=_headers(form)).status_code == 200
        stored = _stored_sids(aof_redis.url)
        assert sorted(stored) == sorted(f["MessageSid"] for f in forms)
        assert set(stored.values()) == {1}
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        web.stop()


def test_sigterm_completes_in_flight_requests_and_refuses_new_ones(
    aof_redis: EmbeddedRedis,
) -> None:
    web = start_web(aof_redis.url)
    admin = redis.Redis.from_url(aof_redis.url)
    forms = [inbound_form(f"deploy {n}", sender=f"whatsapp:+3363000{n:04d}") for n in range(20)]
    try:
        results: list[int] = []

        def send_all() -> None:
            with httpx.Client(base_url=web.url, timeout=30,
                              limits=httpx.Limits(max_connections=30)) as client:
                threads = []
                for form in forms:
                    t = threading.Thread(target=lambda f=form: results.append(
                        client.post("/webhooks/twilio", content=urlencode(f),
                                    headers=_headers(f)).status_code))
                    t.start()
                    threads.append(t)
                for t in threads:
                    t.join()

        # Hold the requests in flight (Redis paused), then deploy: SIGTERM the web process.
        admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        sender = threading.Thread(target=send_all)
        sender.start()
        time.sleep(0.5)
        web.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            late = httpx.post(f"{web.url}/webhooks/twilio", timeout=2).status_code
        except httpx.HTTPError:
            late = 0
        sender.join(timeout=30)
        assert web.process.wait(timeout=30) == 0
        print(f"\nSIGTERM with {len(forms)} requests in flight: answers {Counter(results)}, "
              f"a new request got {late or 'connection refused'}")
        assert results == [200] * len(forms)
        assert late == 0
        stored = _stored_sids(aof_redis.url)
        assert sorted(stored) == sorted(f["MessageSid"] for f in forms)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        web.stop()
