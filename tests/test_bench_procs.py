"""bench/procs.py: a background process is moved to a lower CPU priority with the processes
it started."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bench.procs import Background, autogroup_nice

# Starts a child, says so, then both wait to be stopped.
_PARENT = ("import subprocess, sys, time; "
           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print(child.pid, flush=True); time.sleep(60)")


def _niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_lower_priority_reaches_the_process_and_its_children(tmp_path: Path) -> None:
    own = os.nice(0)
    lowest = min(19, own + 10)
    log = tmp_path / "log"
    proc = Background("parent", [sys.executable, "-c", _PARENT], log_path=log)
    with proc:
        proc.start()
        pgid = proc.pid  # the session's process group: the child is in it too
        for _ in range(300):  # until the child has started (at most 30 s)
            if log.read_text().strip():
                break
            time.sleep(0.1)
        child = int(log.read_text().split()[0])
        assert _niceness(proc.pid) == own and _niceness(child) == own
        proc.lower_priority(lowest)
        assert _niceness(proc.pid) == lowest
        assert _niceness(child) == lowest
        assert _niceness(os.getpid()) == own  # not the bench's own process
        if autogroup_nice(proc.pid) is not None:
            # Its session's scheduling group as well (without which, under autogroup
            # scheduling, its niceness ranks it only against itself and its child).
            assert autogroup_nice(proc.pid) == lowest
            assert autogroup_nice(child) == lowest
            assert autogroup_nice(os.getpid()) != lowest
        os.killpg(pgid, signal.SIGTERM)  # the child as well


def test_lower_priority_takes_the_cpu_from_it_when_another_session_wants_it(
        tmp_path: Path) -> None:
    """Two busy loops in two sessions, pinned to one CPU: the one lowered to nice 19 gets
    a small share (a niceness alone gave each half under autogroup scheduling)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs CPU affinity (Linux)")
    cpu = sorted(os.sched_getaffinity(0))[-1:]
    busy = [sys.executable, "-c", "while True: pass"]
    with Background("kept", busy, log_path=tmp_path / "a") as kept, \
            Background("lowered", busy, log_path=tmp_path / "b") as lowered:
        kept.start(cpus=cpu)
        lowered.start(cpus=cpu)
        lowered.lower_priority(19)
        before = _cpu_ticks(kept.pid), _cpu_ticks(lowered.pid)
        time.sleep(1.0)
        kept_ticks = _cpu_ticks(kept.pid) - before[0]
        lowered_ticks = _cpu_ticks(lowered.pid) - before[1]
    # Nice 0 against nice 19 weigh 1024 against 15: a fifth is far above that, and far
    # below the half each got when only the niceness was lowered.
    assert lowered_ticks * 4 < kept_ticks, (kept_ticks, lowered_ticks)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
