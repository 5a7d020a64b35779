"""The change log under faults: every trigger of a routed message still runs, once in
effect, when the web process is SIGKILLed right after routing (many times, under load),
when the relay is SIGKILLed mid-batch, and when Redis restarts under the relay.

The effect measured: a trigger on ticket.created applies the greeting macro, so each
ticket must end with exactly one greeting, recorded as an automation event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections import Counter
from pathlib import Path

import redis

from bridge.store import keys
from bridge.store.changelog import RELAY_CONSUMER, ChangeLog
from bridge.store.embedded import EmbeddedRedis
from tests.factories import inbound_form
from tests.faults.conftest import ROOT, start_web
from tests.faults.test_web_crash import _deliver_all
from tests.faults.workers_support import WorkerProcess, wait_until, worker_env

GREETING_TRIGGER = """
[[triggers]]
name = "greet_new_ticket"
on = ["ticket.created"]
when = { status = ["new"] }
then = { apply_macro = "greeting" }
"""


def _config_with_greeting(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("*.py", "__*"))
    with (config / "automations.toml").open("a") as rules:
        rules.write(GREETING_TRIGGER)
    return config


def start_relay(env: dict[str, str], log: Path) -> WorkerProcess:
    """`python -m workers.relay`; successive relays write to one log."""
    return WorkerProcess(env, log, module="workers.relay", append=True)


def stop_relay(relay: WorkerProcess) -> None:
    relay.stop(timeout_s=20)
    relay.close()


def _lag_events(url: str) -> int:
    async def read() -> int:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return (await ChangeLog(client).lag(RELAY_CONSUMER)).events
        finally:
            await client.aclose()
    with contextlib.suppress(redis.RedisError):
        return asyncio.run(read())
    return -1


def _greetings_per_ticket(url: str) -> Counter[str]:
    client = redis.Redis.from_url(url)
    greetings: Counter[str] = Counter()
    for key in client.scan_iter(match=keys.EVENT_STREAMS_GLOB, count=1000):
        ticket = keys.ticket_id_of(key.decode())
        greetings[ticket] += 0
        for _, fields in client.xrange(key):
            data = json.loads(fields[b"data"])
            if fields[b"type"] == b"automation" and data.get("macro") == "greeting":
                greetings[ticket] += 1
    client.close()
    return greetings


def _run_triggers(url: str, tmp_path: Path, config: Path) -> None:
    """Drain the queues with a burst worker (jobs in-process)."""
    env = worker_env(url, tmp_path / "worker-data", BRIDGE_CONFIG_DIR=str(config))
    worker = WorkerProcess(env, tmp_path / "worker.log", ["--burst", "--no-fork"])
    try:
        worker.process.wait(timeout=240)
    finally:
        worker.close()
    assert worker.process.returncode == 0, worker.output()[-4000:]


# A killed relay's lease lapses after 2 s, so each kill below hits a working relay.
RELAY_LEASE_TTL_S = 2


def _relay_env(url: str, tmp_path: Path, config: Path) -> dict[str, str]:
    return worker_env(url, tmp_path / "relay-data", BRIDGE_CONFIG_DIR=str(config),
                      BRIDGE_RELAY_LEASE_TTL_S=str(RELAY_LEASE_TTL_S))


def _leases_taken(log: Path) -> int:
    return log.read_text(errors="replace").count("relay lease of jobs taken")


def test_web_sigkilled_after_routing_loses_no_trigger(aof_redis: EmbeddedRedis,
                                                      tmp_path: Path) -> None:
    contacts, kills = 400, 3
    config = _config_with_greeting(tmp_path)
    relay = start_relay(_relay_env(aof_redis.url, tmp_path, config), tmp_path / "relay.log")
    # Every message from a new contact: each routing opens a ticket and fires a trigger.
    forms = [inbound_form("Bonjour", sender=f"whatsapp:+3367{n:07d}") for n in range(contacts)]
    pending = forms
    outcomes: list[dict[str, int]] = []
    try:
        for round_ in range(kills + 1):
            acked: list[str] = []
            web = start_web(aof_redis.url, BRIDGE_CONFIG_DIR=str(config))
            try:
                # Killed once a third of this round is acknowledged; the last round is not.
                kill_after = max(1, len(pending) // 3) if round_ < kills else 0
                outcomes.append(dict(asyncio.run(
                    _deliver_all(web, pending, acked, kill_after=kill_after))))
            finally:
                web.stop()
            # Twilio redelivers what was not acknowledged.
            pending = [f for f in pending if f["MessageSid"] not in set(acked)]
        assert pending == []
        wait_until(lambda: _lag_events(aof_redis.url) == 0, "the relay to catch up",
                   timeout_s=120)
    finally:
        stop_relay(relay)
    _run_triggers(aof_redis.url, tmp_path, config)
    greetings = _greetings_per_ticket(aof_redis.url)
    print(f"\n{contacts} new contacts, web SIGKILLed {kills} times ({outcomes}): "
          f"{len(greetings)} tickets, greetings per ticket {dict(Counter(greetings.values()))}")
    assert len(greetings) == contacts
    assert set(greetings.values()) == {1}


def test_relay_sigkilled_mid_batch_and_redis_restarted_lose_and_double_nothing(
        aof_redis: EmbeddedRedis, tmp_path: Path) -> None:
    contacts, relay_kills = 600, 5
    config = _config_with_greeting(tmp_path)
    env = _relay_env(aof_redis.url, tmp_path, config)
    forms = [inbound_form("Hello", sender=f"whatsapp:+3368{n:07d}") for n in range(contacts)]
    web = start_web(aof_redis.url, BRIDGE_CONFIG_DIR=str(config))
    relay_log = tmp_path / "relay.log"
    relays = [start_relay(env, relay_log)]
    acked: list[str] = []

    async def paced_load() -> None:
        # Spread over the chaos (20 every 0.4 s, ~12 s: 5 kills, each after a 2 s lease
        # lapses), so that changes are flowing at each kill.
        for start in range(0, len(forms), 20):
            await _deliver_all(web, forms[start:start + 20], acked)
            await asyncio.sleep(0.4)

    async def chaos() -> None:
        for n in range(relay_kills):
            # Wait until the current relay works (took the lease), then kill it mid-flow.
            for _ in range(300):
                if _leases_taken(relay_log) > n:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"relay {n + 1} did not take the lease within 30 s:\n"
                                     + relay_log.read_text()[-2000:])
            await asyncio.sleep(0.3)
            relays[-1].kill_tree()  # SIGKILL: no release of the lease, no position saved
            if n == relay_kills // 2:
                aof_redis.process.kill()  # and Redis, once
                aof_redis.process.wait()
                aof_redis.start()
            relays.append(start_relay(env, relay_log))

    async def load_with_chaos() -> None:
        await asyncio.gather(paced_load(), chaos())

    try:
        asyncio.run(load_with_chaos())
        # Twilio redelivers what was answered 503 while Redis was down.
        unacked = [f for f in forms if f["MessageSid"] not in set(acked)]
        asyncio.run(_deliver_all(web, unacked, acked))
        assert {f["MessageSid"] for f in forms} == set(acked)
        wait_until(lambda: _lag_events(aof_redis.url) == 0, "the relay to catch up",
                   timeout_s=120)
    finally:
        web.stop()
        for relay in relays:
            stop_relay(relay)
    _run_triggers(aof_redis.url, tmp_path, config)
    greetings = _greetings_per_ticket(aof_redis.url)
    leases = _leases_taken(relay_log)
    print(f"\n{contacts} new contacts, relay SIGKILLed {relay_kills} times and Redis once: "
          f"{len(greetings)} tickets, greetings per ticket "
          f"{dict(Counter(greetings.values()))}; relay leases taken {leases}")
    assert leases == relay_kills + 1  # every kill hit the working relay
    assert len(greetings) == contacts
    assert set(greetings.values()) == {1}
