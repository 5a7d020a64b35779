"""The web process SIGKILLed under webhook load (OOM kill, a host dying, a deploy's SIGKILL
after its grace period).

Expected: nothing acknowledged is lost; a request cut off was either stored or not, never
half-applied; Twilio's redelivery to another web process stores each message exactly once;
and a ticket whose opening was cut off between the routing script and the index update is
listed by the sweep even if no redelivery comes.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from urllib.parse import urlencode

import httpx
import redis

from bridge.store import keys
from bridge.store.embedded import EmbeddedRedis
from tests.factories import inbound_form, sign
from tests.faults.conftest import WebProcess, start_web
from tests.faults.workers_support import in_store, now_ms
from workers.sweeper import SWEEP_GRACE_S, list_unlisted

CONTACTS = 1500
MESSAGES_PER_CONTACT = 2
CONCURRENCY = 64


def _headers(form: dict[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign("/webhooks/twilio", form)}


async def _deliver_all(web: WebProcess, forms: list[dict[str, str]], acked: list[str],
                       *, kill_after: int = 0) -> Counter[str]:
    """Each form once (no retry); with kill_after, SIGKILL the web process once that many
    are acknowledged. Counts the outcomes."""
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=web.url, timeout=10,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(form: dict[str, str]) -> None:
            async with sem:
                try:
                    answer = await client.post("/webhooks/twilio", content=urlencode(form),
                                               headers=_headers(form))
                except httpx.HTTPError:
                    outcomes["no answer"] += 1
                    return
                outcomes[str(answer.status_code)] += 1
                if answer.status_code == 200:
                    acked.append(form["MessageSid"])

        async def killer() -> None:
            for _ in range(60_000):  # bounded: 60 s
                if len(acked) >= kill_after:
                    break
                await asyncio.sleep(0.001)
            web.process.kill()

        tasks = [one(f) for f in forms]
        await asyncio.gather(*tasks, *([killer()] if kill_after else []))
    return outcomes


def _stored(url: str) -> tuple[Counter[str], set[str]]:
    """customer_message provider ids -> times stored; the ids of the stored tickets."""
    client = redis.Redis.from_url(url)
    stored: Counter[str] = Counter()
    tickets: set[str] = set()
    for key in client.scan_iter(match=keys.EVENT_STREAMS_GLOB, count=1000):
        tickets.add(keys.ticket_id_of(key.decode()))
        for _, fields in client.xrange(key):
            if fields[b"type"] == b"customer_message":
                stored[json.loads(fields[b"data"])["provider_id"]] += 1
    client.close()
    return stored, tickets


def _unlisted(url: str, tickets: set[str]) -> set[str]:
    client = redis.Redis.from_url(url)
    listed = {m.decode() for m in client.zrange(keys.index("all"), 0, -1)}
    known = {k.decode() for k in client.hkeys(keys.TICKET_CONTACT)}
    client.close()
    return {t for t in tickets if t not in listed or t not in known}


def test_web_process_sigkilled_under_load_loses_and_hides_nothing(
    aof_redis: EmbeddedRedis,
) -> None:
    # Interleaved, so that openings (first messages) and appends are in flight at the kill.
    forms = [inbound_form(f"message {m} of {n}", sender=f"whatsapp:+3366{n:07d}")
             for m in range(MESSAGES_PER_CONTACT) for n in range(CONTACTS)]
    acked: list[str] = []
    first = start_web(aof_redis.url)
    try:
        before = asyncio.run(_deliver_all(first, forms, acked, kill_after=len(forms) // 3))
    finally:
        first.stop()
    acked_before_kill = len(acked)
    stored, tickets = _stored(aof_redis.url)
    assert not set(acked) - set(stored), "an acknowledged message was lost"
    assert set(stored.values()) <= {1}
    cut_off = {f["MessageSid"] for f in forms} - set(acked)
    stored_unacked = len(set(stored) & cut_off)
    hidden = _unlisted(aof_redis.url, tickets)

    # No redelivery yet (Twilio's single retry may not come): the sweep lists them.
    later = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    relisted = in_store(aof_redis.url, lambda store: list_unlisted(store, now_ms=later))
    assert set(relisted) == hidden
    assert _unlisted(aof_redis.url, tickets) == set()

    # Twilio redelivers what was not acknowledged to a new web process: stored once each.
    second = start_web(aof_redis.url)
    try:
        unacked = [f for f in forms if f["MessageSid"] in cut_off]
        after = asyncio.run(_deliver_all(second, unacked, acked))
    finally:
        second.stop()
    stored, tickets = _stored(aof_redis.url)
    print(f"\nweb process SIGKILLed after {acked_before_kill} of {len(forms)} webhooks were "
          f"acknowledged ({dict(before)}): {stored_unacked} of the cut-off ones had been "
          f"stored, {len(hidden)} ticket(s) stored but unlisted, listed by the sweep; "
          f"redelivered {len(unacked)} to a new process ({dict(after)}): "
          f"{len(stored)} stored, {sum(n > 1 for n in stored.values())} twice, "
          f"{len(set(f['MessageSid'] for f in forms) - set(stored))} lost")
    assert after == Counter({"200": len(unacked)})
    assert sorted(stored) == sorted(f["MessageSid"] for f in forms)
    assert set(stored.values()) == {1}
    assert len(tickets) == CONTACTS
    assert _unlisted(aof_redis.url, tickets) == set()
