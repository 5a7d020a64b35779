"""Connection-pool exhaustion and SIGTERM of the web process under load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import redis

from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis
from tests.conftest import AGENT_TOKEN
from tests.factories import inbound_form, sign
from tests.faults.conftest import start_web


def _headers(form: dict[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign("/webhooks/twilio", form)}


def _stored_sids(url: str) -> Counter[str]:
    import json

    client = redis.Redis.from_url(url)
    stored: Counter[str] = Counter()
    for key in client.scan_iter(match=keys.EVENT_STREAMS_GLOB, count=1000):
        for _, fields in client.xrange(key):
            if fields[b"type"] == b"customer_message":
                stored[json.loads(fields[b"data"])["provider_id"]] += 1
    return stored


def test_pool_exhaustion_answers_503_quickly_then_recovers(aof_redis: EmbeddedRedis) -> None:
    """A burst of webhooks and agent API reads against a 2-connection pool while Redis
    answers nothing (its process stopped): every request is answered 503 while Redis is
    still stopped (after the pool's wait or the socket timeout, both below Twilio's 15 s
    webhook timeout), none hangs until Redis is back; Twilio's retries then land each
    message once."""
    web = start_web(aof_redis.url, REDIS_MAX_CONNECTIONS="2")
    assert aof_redis.process is not None
    redis_pid = aof_redis.process.pid
    forms = [inbound_form(f"burst {n}", sender=f"whatsapp:+3362000{n:04d}") for n in range(60)]
    try:
        async def burst() -> list[tuple[str, int, float]]:
            async with httpx.AsyncClient(base_url=web.url, timeout=30,
                                         limits=httpx.Limits(max_connections=100)) as client:
                async def timed(kind: str, request: Awaitable[httpx.Response]
                                ) -> tuple[str, int, float]:
                    started = time.monotonic()
                    answer = await request
                    return kind, answer.status_code, time.monotonic() - started

                # Until the burst is answered: the pooled connections hang on it.
                os.kill(redis_pid, signal.SIGSTOP)
                webhooks = [timed("webhook", client.post(
                    "/webhooks/twilio", content=urlencode(f), headers=_headers(f)))
                    for f in forms]
                reads = [timed("api", client.get(
                    "/api/v1/tickets", headers={"Authorization": f"Bearer {AGENT_TOKEN}"}))
                    for _ in range(20)]
                return await asyncio.wait_for(asyncio.gather(*webhooks, *reads), 60)

        answers = asyncio.run(burst())
        still_stopped = _unresponsive(aof_redis.url)
        os.kill(redis_pid, signal.SIGCONT)
        statuses = Counter((kind, status) for kind, status, _ in answers)

        def waits_s(kind: str) -> list[float]:
            return sorted(wait for k, _, wait in answers if k == kind)

        hooks, reads = waits_s("webhook"), waits_s("api")
        print(f"\nburst of {len(forms)} webhooks and 20 API reads, 2-connection pool, Redis "
              f"stopped (SIGSTOP): {dict(statuses)}; answered after {hooks[len(hooks) // 2]:.1f}"
              f" s (webhooks, median; slowest {hooks[-1]:.1f} s) and "
              f"{reads[len(reads) // 2]:.1f} s (API reads; slowest {reads[-1]:.1f} s), all "
              "while Redis was still stopped")
        assert still_stopped
        assert statuses == Counter({("webhook", 503): len(forms), ("api", 503): 20})

        # Twilio retries the refused ones: everything lands exactly once.
        with httpx.Client(base_url=web.url, timeout=10) as client:
            for form in forms:
                assert client.post("/webhooks/twilio", content=urlencode(form),
                                   headers=_headers(form)).status_code == 200
        stored = _stored_sids(aof_redis.url)
        assert sorted(stored) == sorted(f["MessageSid"] for f in forms)
        assert set(stored.values()) == {1}
    finally:
        os.kill(redis_pid, signal.SIGCONT)
        web.stop()


def _unresponsive(url: str) -> bool:
    """Whether Redis still answers nothing (the probe gives up waiting)."""
    probe = redis.Redis.from_url(url, socket_timeout=0.5)
    try:
        probe.ping()
        return False
    except redis.TimeoutError:
        return True
    finally:
        probe.close()


def _connections_to(port: int) -> int:
    """Established TCP connections whose local end is `port` (the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


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

        # Hold the requests in flight (Redis paused), then deploy: SIGTERM the web process
        # once every request has reached it (a fixed sleep was not always enough on a
        # loaded machine: requests that had not connected yet met a closed port).
        admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
        sender = threading.Thread(target=send_all)
        sender.start()
        deadline = time.monotonic() + 20
        while _connections_to(web.port) < len(forms) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _connections_to(web.port) >= len(forms)
        time.sleep(0.3)  # their requests written, now waiting for Redis
        web.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            late = httpx.post(f"{web.url}/webhooks/twilio", timeout=2).status_code
        except httpx.HTTPError:
            late = 0
        admin.execute_command("CLIENT", "UNPAUSE")  # the requests in flight complete
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
