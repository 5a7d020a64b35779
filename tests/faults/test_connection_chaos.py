"""Redis connections dropped (CLIENT KILL TYPE normal) and scripts flushed (SCRIPT FLUSH)
over and over while a web process takes webhooks and 4 worker processes send replies.

Expected: every webhook is answered 200 or 503 (never 500) and, with Twilio's redelivery,
stored exactly once; every reply is accepted by the Twilio stub exactly once and none
fails; the same processes carry on throughout (no worker restarted, no scheduler died).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio

from bridge.jobs import JobQueues
from bridge.store.embedded import EmbeddedRedis
from bridge.store.tickets import TicketStore
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, CONTACT_KEY
from tests.factories import inbound_form
from tests.faults.conftest import start_web
from tests.faults.test_redis_restart import _deliver
from tests.faults.test_web_crash import _stored
from tests.faults.test_worker_faults import open_tickets_with_replies, settled
from tests.faults.workers_support import (
    WaitTimeout,
    WorkerProcess,
    in_store,
    sending_worker_env,
    wait_until,
)
from tests.stubs.twilio_stub import run_in_thread

# A hang guard, not a speed check: alone it took 31-96 s in 8 runs on 2026-12-03 (the
# longest with a stranded job recovered); beside three other scenarios on two cores it has
# taken 3.5 min, close to the 240 s it once had.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

MESSAGES = 4000
CONTACTS = 400
REPLIES = 300
KILL_EVERY_S = 0.1
FLUSH_EVERY = 5  # kills
# A kill that lands on a worker's dequeue strands that job in RQ's intermediate list
# (workers/dequeue.py); with FAST_RECOVERY's 5 s passes it runs again ~75 s later (first
# seen, failed a minute after, retried 5 s after that). Under kills every 0.1 s its retry
# can be stranded once more: room for two recoveries.
SETTLE_TIMEOUT_S = 200
# The test's own progress check reads 300 delivery states on a connection of this name,
# which the chaos spares: killed too, under load it rarely got through its reads between
# two kills and reported "not settled" long after every reply had gone out.
OBSERVER = "chaos-observer"


def _where_unsettled(url: str, sends: list[tuple[str, str]], job_ids: list[str]) -> str:
    """For a timed-out run: each unsettled reply's delivery state and where its job is."""
    connection = redis.Redis.from_url(url, client_name=OBSERVER)
    try:
        def members(key: str) -> set[bytes]:  # RQ's queues are lists, its registries zsets
            if connection.type(key) == b"zset":
                return set(connection.zrange(key, 0, -1))
            return set(connection.lrange(key, 0, -1))

        places = {key: members(key) for keys in JobQueues(connection).key_names()
                  for key in (keys.queued, keys.dequeuing, keys.started, keys.scheduled,
                              keys.failed)}
        lines = []
        for (tid, eid), state, jid in zip(sends, _delivery_states(url, sends), job_ids,
                                          strict=True):
            if settled(state):
                continue
            status = connection.hget(f"rq:job:{jid}", "status")
            where = [key for key, members in places.items() if jid.encode() in members]
            lines.append(f"ticket {tid} event {eid}: {state}; job {jid} status {status!r} "
                         f"in {where or 'no list'}")
        return "\n".join(lines[:20]) or "every reply settled after all"
    finally:
        connection.close()


def _delivery_states(url: str, sends: list[tuple[str, str]]) -> list[dict[str, str]]:
    async def read() -> list[dict[str, str]]:
        client = redis.asyncio.Redis.from_url(url, client_name=OBSERVER)
        try:
            store = TicketStore(client, contact_key=CONTACT_KEY.encode())
            return [await store.delivery_state(tid, eid) for tid, eid in sends]
        finally:
            await client.aclose()

    return asyncio.run(read())


def _why_restarted(log: str) -> str:
    """The worker log around each restart: what the process that died printed last."""
    lines = log.splitlines()
    marks = [n for n, line in enumerate(lines) if "starting another in" in line]
    return "\n---\n".join("\n".join(lines[max(0, n - 40):n + 1]) for n in marks)


def test_dropped_connections_and_flushed_scripts_lose_and_double_nothing(
    aof_redis: EmbeddedRedis, tmp_path: Path,
) -> None:
    url = aof_redis.url
    admin = redis.Redis.from_url(url)
    stop = threading.Event()
    chaos: Counter[str] = Counter()

    def chaos_loop() -> None:
        own_id = admin.client_id()
        while not stop.wait(KILL_EVERY_S):
            victims = [c["id"] for c in admin.client_list(_type="normal")
                       if c.get("name") != OBSERVER and int(c["id"]) != own_id]
            kills = admin.pipeline(transaction=False)
            for victim in victims:
                kills.client_kill_filter(_id=victim)
            chaos["killed connections"] += sum(
                n for n in kills.execute(raise_on_error=False) if isinstance(n, int))
            chaos["kills"] += 1
            if chaos["kills"] % FLUSH_EVERY == 0:
                admin.script_flush()
                chaos["script flushes"] += 1

    with run_in_thread(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                       latency_s=0.05) as stub:
        sends = in_store(url, lambda s: open_tickets_with_replies(s, REPLIES))
        web = start_web(url)
        env = sending_worker_env(url, tmp_path, stub.url)
        worker = WorkerProcess(env, tmp_path / "workers.log", args=["--processes", "4"])
        forms = [inbound_form(f"message {n}", sender=f"whatsapp:+3367{n % CONTACTS:07d}")
                 for n in range(MESSAGES)]
        acked: list[str] = []
        statuses: Counter[int] = Counter()
        chaos_thread = threading.Thread(target=chaos_loop)
        try:
            wait_until(lambda: "*** Listening on" in worker.output(), "the workers",
                       timeout_s=30, workers=[worker])
            queues = JobQueues(admin)
            job_ids = [queues.send_outbound(tid, eid) for tid, eid in sends]
            chaos_thread.start()

            async def webhooks() -> None:
                async with httpx.AsyncClient(base_url=web.url, timeout=10,
                                             limits=httpx.Limits(max_connections=32)) as client:
                    sem = asyncio.Semaphore(32)

                    async def one(form: dict[str, str]) -> None:
                        async with sem:
                            await _deliver(client, form, acked, statuses)

                    await asyncio.gather(*(one(f) for f in forms))

            def all_settled() -> bool:
                try:
                    return all(settled(s) for s in _delivery_states(url, sends))
                except redis.ConnectionError:
                    # Killed while connecting, before its name was set: the chaos cannot
                    # tell it apart yet. This poll saw nothing; the next one reads again.
                    return False

            asyncio.run(webhooks())
            try:
                wait_until(all_settled, "every reply sent or visibly failed",
                           timeout_s=SETTLE_TIMEOUT_S,
                           interval_s=0.5, workers=[worker])
            except WaitTimeout as timed_out:
                stop.set()
                raise WaitTimeout(f"{timed_out}\n{_where_unsettled(url, sends, job_ids)}"
                                  ) from None
            stop.set()
            chaos_thread.join()
            assert web.process.poll() is None, "the web process died"
            final = _delivery_states(url, sends)
            messages = stub.messages
            assert stub.invalid == []
        finally:
            stop.set()
            if chaos_thread.is_alive():
                chaos_thread.join()
            log = worker.output()
            worker.close()
            web.stop()
            admin.close()

    stored, _ = _stored(url)
    bodies = Counter(m.get("Body") for m in messages)
    failed = Counter(s.get("error_code", "") for s in final if s.get("state") == "failed")
    respawned = log.count("starting another in")
    scheduler_deaths = log.count("rq.scheduler Scheduler [PID")
    print(f"\n{dict(chaos)} while {MESSAGES} webhooks and {REPLIES} replies went through: "
          f"webhook answers {dict(statuses)}; {len(acked)} acknowledged, "
          f"{len(set(acked) - set(stored))} lost, {sum(n > 1 for n in stored.values())} "
          f"stored twice; replies: {len(bodies)} accepted by the stub, "
          f"{sum(n - 1 for n in bodies.values())} duplicates, {sum(failed.values())} failed "
          f"({dict(failed) or '-'}); worker processes restarted: {respawned}; "
          f"scheduler processes died: {scheduler_deaths}")
    assert chaos["killed connections"] > 0 and chaos["script flushes"] > 0
    assert set(statuses) <= {200, 503}, statuses
    assert sorted(acked) == sorted(f["MessageSid"] for f in forms)
    assert set(stored) == set(acked) | {f"SM{n:032x}" for n in range(REPLIES)}  # + set-up
    assert set(stored.values()) == {1}
    assert len(bodies) == REPLIES and set(bodies.values()) == {1}
    assert not failed
    assert respawned == 0, _why_restarted(log)
    # RQ's scheduler process (restarted by its worker's next maintenance pass, while timers
    # and retries wait) died of scripts flushed under its heartbeat's retry before
    # bridge.store.scripts.EvalOnNoScript: twice in a run of this test.
    assert scheduler_deaths == 0, log[log.index("rq.scheduler Scheduler [PID"):][:3000]
