"""`python -m workers --processes K`: one supervisor process and K forked worker processes.

Each job runs to completion in one process at a time (RQ), and a send spends most of its
time waiting for Twilio, so messages in flight = worker processes. The supervisor imports and
warms everything once (workers.runtime.preload), freezes the objects it holds out of the
garbage collector's reach (gc.freeze: the children then leave those pages shared instead of
copying them on the first collection), and forks the children, which share the warmed
memory copy-on-write. Each child builds its own Redis connection and worker and runs it
exactly as a single `python -m workers` process would (same queues, scheduler, timing).

Signals (the parent and every child may get them: platforms signal every process of a
container, a terminal's Ctrl-C reaches its whole foreground process group):

- SIGTERM or SIGINT to the supervisor: warm shutdown. Each child is sent SIGTERM once: it
  takes no new job and exits after the current one. A child that gets the platform's SIGTERM
  too ignores the copy (RQ ignores a second signal within a second). A repeat more than a
  second later is passed on: RQ's "press Ctrl+C again" cold shutdown. Children still running
  `grace_s` after the first signal are killed with their process group (scheduler included).
- A child that exits on its own is started again after a back-off (1 s, doubling up to 30 s
  while it keeps dying young), unless the supervisor is stopping, or the child finished its
  work (`--burst`: exit status 0).
- Until the target has its own handlers, a child holds SIGTERM and SIGINT instead of dying
  of them, and the target asks for the held ones once its handlers are in place
  (`held_stop_signals`): a stop request that arrives while a child is still starting is a
  warm shutdown, not a half-started worker killed (RQ registers a worker, and forks its
  scheduler, before it installs its signal handlers). The scheduler, forked before that,
  starts with the stop signals blocked until its own handlers exist (workers/scheduler.py).
- Each child leads its own process group and asks the kernel (Linux) for SIGTERM when the
  supervisor dies, so a SIGKILLed supervisor does not leave orphans working. When a child
  ends, whatever is left in its group (RQ's scheduler process, if the child was killed) is
  sent SIGTERM.

Exit status: 0 when every child stopped cleanly, 1 when one had to be killed or failed while
stopping.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("workers.pool")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1
# Signals closer together than this are one request (RQ's own rule for its workers).
_DUPLICATE_S = 1.0


@dataclass
class _Child:
    slot: int
    pid: int
    started: float


class Supervisor:
    """Forks `processes` children that each call `target()` (its return value is the child's
    exit status) and keeps them running until told to stop."""

    def __init__(self, processes: int, target: Callable[[], int], *, grace_s: float = 25.0,
                 poll_s: float = 0.2, min_backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 stable_s: float = 60.0) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self.target = target
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.children: dict[int, _Child] = {}  # pid -> child
        self._backoff: dict[int, float] = {}  # slot -> current back-off
        self._restart_at: dict[int, float] = {}  # slot -> when to start it again
        self._stop_at = 0.0  # monotonic time of the first stop request (0: running)
        self._last_signal = 0.0
        self._failed = False

    # ---------------------------------------------------------------- the parent

    def run(self) -> int:
        gc.collect()
        gc.freeze()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            for slot in range(self.processes):
                self._spawn(slot)
            while self.children or (self._restart_at and not self._stop_at):
                self._reap()
                self._restart_due()
                if self._stop_at and time.monotonic() - self._stop_at > self.grace_s:
                    self._kill_all()
                time.sleep(self.poll_s)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.children:  # an exception in the loop: leave nothing behind
                self._kill_all()
        return 1 if self._failed else 0

    def stop(self) -> None:
        """Warm shutdown (what SIGTERM does)."""
        if not self._stop_at:
            self._stop_at = time.monotonic()
            log.info("stopping %d worker processes (warm: current jobs finish first)",
                     len(self.children))
        self._restart_at.clear()
        self._signal_children(signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        repeat = bool(self._stop_at)
        if repeat and now - self._last_signal < _DUPLICATE_S:
            return  # the same request reaching us twice (terminal + parent, platform + us)
        self._last_signal = now
        if repeat:
            log.warning("second stop signal: passing it on (cold shutdown of running jobs)")
            self._signal_children(signal.SIGTERM)
            return
        self.stop()

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _kill_all(self) -> None:
        for pid, child in list(self.children.items()):
            log.error("worker process %d (slot %d) still running %.0f s after the stop "
                      "request: killing it", pid, child.slot, self.grace_s)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._failed = self._failed or bool(self.children)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid, None)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            # What the child left in its process group, e.g. RQ's scheduler process when the
            # child was killed: stopped, so that it releases the scheduler lock.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            code = os.waitstatus_to_exitcode(status)
            if self._stop_at:
                if code != 0:
                    self._failed = True
                    log.warning("worker process %d exited with status %d while stopping",
                                pid, code)
                continue
            lived = time.monotonic() - child.started
            if code == 0:
                log.info("worker process %d (slot %d) finished", pid, child.slot)
                continue
            backoff = self._backoff.get(child.slot, 0.0)
            backoff = self.min_backoff_s if lived > self.stable_s or not backoff \
                else min(self.max_backoff_s, backoff * 2)
            self._backoff[child.slot] = backoff
            self._restart_at[child.slot] = time.monotonic() + backoff
            log.error("worker process %d (slot %d) exited with status %d after %.0f s; "
                      "starting another in %.0f s", pid, child.slot, code, lived, backoff)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, at in list(self._restart_at.items()):
            if at <= now and not self._stop_at:
                del self._restart_at[slot]
                self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        # Signals are held during the fork so that the child never runs the parent's
        # handler (it would signal its siblings).
        parent = os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                self._child(parent)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.children[pid] = _Child(slot, pid, time.monotonic())
        log.debug("worker process %d started (slot %d)", pid, slot)

    # ---------------------------------------------------------------- a child

    def _child(self, parent: int) -> None:
        """Never returns: the child must not run the parent's code after fork()."""
        code = 1
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, _hold)  # until the worker installs its own
            # RQ's scheduler, forked before the worker's handlers exist, inherits _hold
            # with the stop signals blocked until its own handlers replace it
            # (workers/scheduler.py): a stop cannot be held there and lost.
            os.setpgid(0, 0)
            _die_with(parent)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            code = self.target()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            log.exception("worker process %d failed", os.getpid())
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


_held: list[int] = []


def _hold(signum: int, frame: FrameType | None) -> None:
    if signum not in _held:
        _held.append(signum)


def held_stop_signals() -> list[int]:
    """The stop signals held since this child started (emptied): the target calls it once
    its own handlers are installed and acts on them. Empty outside a supervisor's child."""
    held = list(_held)
    _held.clear()
    return held


def _die_with(parent: int) -> None:
    """Linux: SIGTERM (a warm shutdown) when the supervisor dies, however it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)
