"""Render helper processes: where macro templates run, with time and memory limits.

Every render runs in a separate render-helper process with a wall-clock limit
(`Limits.time_limit_s` per template and `Limits.budget_s` for the whole call, SIGALRM in
the helper's main thread; the parent kills and replaces a helper that does not answer within
the budget plus a grace second) and an address-space limit (`Limits.memory_mb` above the
helper's size at start). Helpers run at a lower CPU priority (`HELPER_NICE`) so a busy
helper does not take the CPU from the web process's webhooks.

Why a separate process: rendering is synchronous Python, so `asyncio.wait_for` cannot stop
it, and `signal.alarm` only works in the main thread (the web process renders from a thread
pool; RQ already owns SIGALRM for its job timeout in the worker). A tracing hook could stop
loops but not one huge C-level allocation (`{% set s = s ~ s %}` doubling), and a memory
blow-up in the web process itself would take every request down with it. A helper can be
killed whatever it is doing. Helpers are fresh interpreters (`python -I -c ...`) that import
only bridge.sandbox and this module, kept alive (at most `HELPERS_PER_PROCESS` per process,
one request at a time each): a render costs a pipe round trip (well under a millisecond)
plus the rendering, and ~100 ms once when a helper starts. `multiprocessing` was not used:
its spawn and forkserver children re-import the parent's `__main__` script (`bridge serve`
would import the whole app per render), and forking the threaded web process is unsafe. A
forked process (an RQ work horse) starts its own helpers, never its parent's.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from bridge.sandbox import Limits, TemplateProblem, render_one

# How long a new render helper may take to start (interpreter, imports).
STARTUP_S = 15.0
# Added to a helper's nice value (19 is the lowest priority): rendering gets the CPU the
# request handlers leave, and still progresses on an otherwise idle machine.
HELPER_NICE = 19
# A rendering helper gives up the CPU this often (sched_yield). Priority alone does not keep
# it out of the web process's way: with three or more CPU-bound processes at nice 19 (or
# SCHED_BATCH) on its CPU, a nice-0 process that wakes up waited for the next scheduler
# tick (3.8 ms) on one wake-up in ten (Linux 6.18 here; two such processes did not delay
# it). Four helpers rendering endless templates next to the web process raised its webhook
# p99 from 2.4 to 6.3 ms (bench/render_isolation.py). Yielding every millisecond brought
# the p99 wake-up delay beside 4 and 8 such processes back to 0.08-0.6 ms. The yield is
# driven by the same real-time alarm that enforces the time limit: CPU-time timers
# (ITIMER_VIRTUAL) tick with the scheduler and did not help.
YIELD_EVERY_S = 0.001

# ------------------------------------------------------------------ render helpers
#
# A helper is a fresh interpreter (`python -I -c "... serve()"`) that imports only this
# module and bridge.sandbox. It reads one JSON request per line on stdin and answers one
# JSON line on stdout. It renders in its own main thread, so SIGALRM (setitimer) stops a
# template at its time limit or at the end of the request's budget; its address space is
# capped (RLIMIT_AS) so a blow-up is a MemoryError, not an OOM kill of the web process.
# The parent keeps a few helpers per process and kills and replaces one that does not
# answer within the budget plus a grace second (a template stuck in one long C call, a
# crash). A forked process (an RQ work horse) never uses its
# parent's helpers: the pool is per process id.


class _Timeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so no `except Exception` eats it."""


# When the template being rendered must stop (time.monotonic()); None: not rendering.
_render_deadline: float | None = None
yields = 0  # since the helper started (tests)


def _on_alarm(signum: int, frame: Any) -> None:
    """Every YIELD_EVERY_S of rendering: stop at the deadline, else give the CPU away once.
    One-shot timers re-armed here, never an interval timer: a helper kept off the CPU
    would come back to a pile of pending alarms."""
    global yields
    if _render_deadline is None:  # an alarm that fired as the render ended
        return
    if time.monotonic() >= _render_deadline:
        raise _Timeout
    os.sched_yield()
    yields += 1
    left_s = _render_deadline - time.monotonic()
    if left_s <= 0:
        raise _Timeout
    _arm(left_s)


def _arm(left_s: float) -> None:
    # Never 0 (that disarms): a few microseconds left still end in an alarm.
    signal.setitimer(signal.ITIMER_REAL, min(YIELD_EVERY_S, max(left_s, 1e-5)))


def _render_with_deadline(key: str, source: str, context: Mapping[str, Any],
                          limits: Limits, limit_s: float) -> str:
    """render_one, stopped with _Timeout after limit_s of wall-clock time."""
    global _render_deadline
    _render_deadline = time.monotonic() + limit_s
    try:
        _arm(limit_s)
        return render_one(key, source, context, limits)
    finally:
        _render_deadline = None
        signal.setitimer(signal.ITIMER_REAL, 0)


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError):  # no /proc (macOS): the time limit still applies
        return None


def _set_memory_cap(baseline: int | None, memory_mb: int) -> None:
    if baseline is None:
        return
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = baseline + memory_mb * 1024 * 1024
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        pass


def budget_problem(key: str, limits: Limits) -> list[Any]:
    return ["problem", key, "budget",
            f"not checked: the render budget of {limits.budget_s:g} s for this request was "
            "spent", None]


def _serve_one(request: dict[str, Any]) -> list[list[Any]]:
    limits = Limits(**request["limits"])
    context = request["context"]
    out: list[list[Any]] = []
    deadline = time.monotonic() + limits.budget_s
    for key, source in request["sources"].items():
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            out.append(budget_problem(key, limits))
            continue
        # The template's own limit, or what is left of the request's budget.
        cut_by_budget = left_s < limits.time_limit_s
        try:
            text = _render_with_deadline(key, source, context, limits,
                                         min(limits.time_limit_s, left_s))
            out.append(["ok", key, text])
        except TemplateProblem as p:
            out.append(["problem", key, p.kind, p.message, p.line])
        except _Timeout:
            if cut_by_budget:
                out.append(budget_problem(key, limits))
            else:
                out.append(["problem", key, "timeout",
                            f"rendering took longer than {limits.time_limit_s:g} s", None])
    return out


def serve() -> None:
    """The helper's main loop (run by `_Helper`, not by hand)."""
    # Ctrl-C reaches every process of the terminal's group, helpers included: the parent
    # stops its helpers (stdin closed, or killed), so a helper does not answer it with a
    # KeyboardInterrupt traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    baseline = _address_space()
    stdout = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        _set_memory_cap(baseline, int(request["limits"]["memory_mb"]))
        stdout.write(json.dumps(_serve_one(request)).encode() + b"\n")
        stdout.flush()


class _Helper:
    def __init__(self) -> None:
        paths = [p for p in sys.path if p]
        # Lower the priority first: the interpreter's start and imports are CPU work too.
        # SIGINT ignored from the first line: serve() says why.
        code = (f"import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                f"os.nice({HELPER_NICE}); sys.path[:0] = {paths!r}; "
                "from bridge.render_helpers import serve; serve()")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
        )
        self.fresh = True
        self._buf = b""

    def ask(self, request: dict[str, Any], timeout_s: float) -> list[list[Any]] | None:
        """The answer, or None when the helper died or did not answer in time."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        deadline = time.monotonic() + timeout_s + (STARTUP_S if self.fresh else 0)
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        self.fresh = False
        answer: list[list[Any]] = json.loads(line)
        return answer

    def close(self, *, kill: bool = False) -> None:
        if kill and self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    """At most `size` helpers per process, each serving one request at a time."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self.idle: list[_Helper] = []
        self.count = 0
        self.cond = threading.Condition()

    def acquire(self) -> _Helper:
        with self.cond:
            while True:
                while self.idle:
                    helper = self.idle.pop()
                    if helper.proc.poll() is None:
                        return helper
                    # Died while idle (killed, OOM): replace it, do not fail a render.
                    self.count -= 1
                    helper.close()
                if self.count < self.size:
                    break
                self.cond.wait()
            self.count += 1
        try:
            return _Helper()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise

    def release(self, helper: _Helper, *, healthy: bool) -> None:
        if not healthy:
            helper.close(kill=True)
        with self.cond:
            if healthy:
                self.idle.append(helper)
            else:
                self.count -= 1
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            helpers, self.idle = self.idle, []
            self.count -= len(helpers)
        for helper in helpers:
            helper.close()


HELPERS_PER_PROCESS = 4
GRACE_S = 1.0
_POOL_LOCK = threading.Lock()
_POOL: _Pool | None = None


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            # After a fork the parent's helpers belong to the parent: leave them alone.
            _POOL = _Pool(HELPERS_PER_PROCESS)
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close()


def render_isolated(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits
) -> tuple[dict[str, str], list[TemplateProblem]]:
    request = {"sources": dict(sources), "context": dict(context), "limits": asdict(limits)}
    pool = _pool()
    helper = pool.acquire()
    answer = None
    try:
        wait_s = min(limits.time_limit_s * len(sources), limits.budget_s) + GRACE_S
        answer = helper.ask(request, wait_s)
    finally:
        pool.release(helper, healthy=answer is not None)
    if answer is None:
        return {}, [TemplateProblem(key, "timeout", "the renderer did not answer in time "
                                    "(stopped: time, memory or CPU limit)")
                    for key in sources]
    texts: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    for item in answer:
        if item[0] == "ok":
            texts[item[1]] = item[2]
        else:
            problems.append(TemplateProblem(item[1], item[2], item[3], item[4]))
    return texts, problems
