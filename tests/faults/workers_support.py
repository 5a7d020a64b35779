"""Running workers in tests: the one place that starts them (the fault scenarios in
tests/faults and the worker, sweep, outbound and automation tests all come here).

Workers run as the real `python -m workers` (WorkerProcess, or `burst` for one pass), or in
this process with RQ's SimpleWorker (`work_in_process`). In the fault scenarios RQ's timing
is shortened through the settings it reads (BRIDGE_WORKER_TTL_S,
BRIDGE_WORKER_MAINTENANCE_INTERVAL_S, BRIDGE_WORKER_JOB_MONITORING_INTERVAL_S; see
config/settings.py) so recoveries take about a minute in tests.

The rest: a worker subprocess that can be SIGKILLed with its work horse (the horse leads
its own process group, so killing the worker's group alone leaves it running), bounded
waits, and store access from synchronous test code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from bench.procs import children_by_parent
from bridge.jobs import QUEUES_BY_PRIORITY
from bridge.store.tickets import TicketStore
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, CONTACT_KEY
from workers.__main__ import BoundedUnsubscribe

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

WORKER_TTL_ENV = "BRIDGE_WORKER_TTL_S"
MAINTENANCE_INTERVAL_ENV = "BRIDGE_WORKER_MAINTENANCE_INTERVAL_S"
JOB_MONITORING_INTERVAL_ENV = "BRIDGE_WORKER_JOB_MONITORING_INTERVAL_S"

# Recovery within about a minute: a dead worker's job is abandoned 65 s after its last
# heartbeat (the +60 is RQ's, fixed), a dead scheduler's lock expires after 61 s (RQ's
# interval + 60, fixed); the survivors look every 5 s.
FAST_RECOVERY = {WORKER_TTL_ENV: "20", MAINTENANCE_INTERVAL_ENV: "5",
                 JOB_MONITORING_INTERVAL_ENV: "5"}


# ------------------------------------------------------------------ processes


def descendants(pid: int) -> list[int]:
    tree = children_by_parent()
    found: list[int] = []
    todo = list(tree.get(pid, []))
    while todo and len(found) < 1000:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


# The WhatsApp sender the workers send from in these scenarios.
TWILIO_FROM = "whatsapp:+14155238886"


def sending_worker_env(redis_url: str, data_dir: Path, twilio_api_url: str) -> dict[str, str]:
    """Workers that send through the Twilio stub at that URL, with FAST_RECOVERY timing."""
    return worker_env(redis_url, data_dir, TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                      TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_WHATSAPP_FROM=TWILIO_FROM,
                      TWILIO_API_URL=twilio_api_url, **FAST_RECOVERY)


def worker_env(redis_url: str | None, data_dir: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without its bridge/Twilio/Redis settings, plus these
    (no REDIS_URL when redis_url is None)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWILIO_", "REDIS_", "BRIDGE_", "PUBLIC_BASE_URL"))}
    env.update(BRIDGE_CONTACT_KEY=CONTACT_KEY, BRIDGE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               PUBLIC_BASE_URL="https://bridge.example.com", **extra)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


class WorkerProcess:
    """`python -m workers` (or another worker program, `module`) in its own session
    (process group), its output in `log` (`append`: after what earlier processes wrote)."""

    def __init__(self, env: dict[str, str], log: Path, args: Iterable[str] = (), *,
                 module: str = "workers", append: bool = False) -> None:
        self.log = log
        self._out = log.open("ab" if append else "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=ROOT, env=env,
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        """The scheduler process and the work horse, when there are."""
        return descendants(self.pid) if self.alive() else []

    def kill_tree(self) -> dict[int, int]:
        """SIGKILL the worker, its scheduler and its work horse, as a node dying would.

        The group is stopped first so that the worker cannot fork a new horse between the
        listing and the kill. Returns the killed children: pid -> process group (a work
        horse leads its own group; the scheduler is in the worker's)."""
        if not self.alive():
            return {}
        own_group = os.getpgrp()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGSTOP)
        tree: dict[int, int] = {}
        for child in descendants(self.pid):
            with contextlib.suppress(ProcessLookupError):
                tree[child] = os.getpgid(child)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for child, group in tree.items():
            with contextlib.suppress(ProcessLookupError):
                if group != own_group:
                    os.killpg(group, signal.SIGKILL)
                os.kill(child, signal.SIGKILL)
        self.process.wait(timeout=10)
        return tree

    def stop(self, timeout_s: float = 30) -> int | None:
        """Warm shutdown (SIGTERM); SIGKILL of the tree if it does not end in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        return self.process.returncode

    def close(self) -> None:
        if self.alive():
            self.kill_tree()
        self._out.close()


def burst(redis_url: str, data_dir: Path, *args: str) -> None:
    """One burst of `python -m workers --burst --no-fork` (without Twilio credentials sends
    go to the local outbox), as a separate process: RQ's worker wants a main thread of its
    own, which an async test (running this in a thread) cannot give it."""
    done = subprocess.run([sys.executable, "-m", "workers", "--burst", "--no-fork", *args],
                          cwd=ROOT, env=worker_env(redis_url, data_dir), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def work_in_process(connection: redis.Redis, queue_names: Iterable[str] = QUEUES_BY_PRIORITY,
                    *, with_scheduler: bool = False) -> bool:
    """Run the jobs queued on these queues in this process, in priority order, with RQ's
    SimpleWorker (the real job entry points on the runtime workers.runtime holds); whether
    the worker did any job. `with_scheduler`: due scheduled jobs are moved to their queue
    first."""
    queues = [Queue(name, connection=connection, serializer=JSONSerializer)
              for name in queue_names]
    worker = _BurstWorker(queues, connection=connection, serializer=JSONSerializer)
    return bool(worker.work(burst=True, with_scheduler=with_scheduler))


class _BurstWorker(BoundedUnsubscribe, SimpleWorker):
    """RQ's SimpleWorker, stopping as the bridge's workers do: its teardown could wait a
    minute for redis-py's command-channel thread (a test once took 60 s)."""


# ------------------------------------------------------------------ waiting and the store


class WaitTimeout(AssertionError):
    pass


def wait_until(check: Callable[[], bool], what: str, *, timeout_s: float,
               interval_s: float = 0.1,
               workers: Iterable[WorkerProcess] = ()) -> float:
    """Poll `check` until it holds; the seconds it took. Bounded in time and in rounds;
    fails at once if one of `workers` exits."""
    watched = list(workers)
    started = time.monotonic()
    for _ in range(int(timeout_s / interval_s) + 1):
        if check():
            return time.monotonic() - started
        for worker in watched:
            if not worker.alive():
                raise WaitTimeout(f"worker {worker.pid} exited while waiting for {what}:\n"
                                  f"{worker.output()[-4000:]}")
        if time.monotonic() - started > timeout_s:
            break
        time.sleep(interval_s)
    logs = "\n".join(f"--- worker {w.pid}\n{w.output()[-4000:]}" for w in watched)
    raise WaitTimeout(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")


def in_store(redis_url: str, work: Callable[[TicketStore], Coroutine[Any, Any, T]]) -> T:
    """Run store code from synchronous test code, on a connection of its own."""
    async def go() -> T:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await work(TicketStore(client, contact_key=CONTACT_KEY.encode()))
        finally:
            await client.aclose()

    return asyncio.run(go())


def now_ms() -> int:
    return int(time.time() * 1000)


