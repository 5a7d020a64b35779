"""bench/procs.py: a background process is moved to a lower CPU priority with the processes
it started."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from bench.procs import Background

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
        os.killpg(pgid, signal.SIGTERM)  # the child as well
