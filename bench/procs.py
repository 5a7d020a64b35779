"""Child processes for the benchmarks: start, wait until healthy, pin to CPUs, stop."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Self

ROOT = Path(__file__).resolve().parent.parent


def cpu_layout() -> tuple[list[int], list[int]] | None:
    """(CPUs for the server under test, CPUs for everything else), or None when the
    machine has a single usable CPU (then nothing is pinned)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return cpus[:1], cpus[1:]


def pin(pid: int, cpus: Sequence[int]) -> None:
    """Pin every thread of a process (Linux: affinity is per thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def set_autogroup_nice(pid: int, nice: int) -> bool:
    """Set the niceness of the autogroup (the session's scheduling group) `pid` is in;
    False when the kernel has no autogroups. Harmless where they are not in use (the
    sysctl off, or the process in a non-root CPU cgroup, as in many containers): there a
    task's own niceness already ranks it against every other."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:
        return False
    return True


def autogroup_nice(pid: int) -> int | None:
    """The niceness of `pid`'s autogroup ("/autogroup-12 nice 19"), None without one."""
    try:
        with open(f"/proc/{pid}/autogroup") as autogroup:
            return int(autogroup.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def own_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
    """Run this process (and the children it starts meanwhile) on `cpus`."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Background:
    """A child process that serves no HTTP (a worker, the relay): started, pinned, stopped
    with SIGTERM like a platform stops a dyno; its output goes to a log file."""

    def __init__(self, name: str, args: Sequence[str], *, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self, cpus: Sequence[int] | None = None) -> subprocess.Popen[bytes]:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        if cpus:
            pin(self.process.pid, cpus)
        return self.process

    def start(self, *, cpus: Sequence[int] | None = None) -> Background:
        self.spawn(cpus)
        return self

    def lower_priority(self, nice: int) -> None:
        """Run the process, its threads and the processes it started (its session's
        process group) at niceness `nice` (up to 19, the lowest CPU priority), from now
        on; what it starts later inherits it. Lowering a priority needs no privilege;
        raising it back would.

        The session's autogroup is lowered too. With autogroup scheduling on (Linux's
        default on desktops and on this bench's machines, `kernel.sched_autogroup_enabled`)
        each session shares the CPU with the others as one group, and a task's niceness
        only ranks it inside its own group: our children each start a session, so a
        niceness alone changed nothing. Measured: two busy loops in two sessions on one
        CPU, one at nice 19, got 150 and 150 ticks in 3 s; with its autogroup at 19 too,
        295 and 5."""
        os.setpriority(os.PRIO_PGRP, self.pid, nice)
        set_autogroup_nice(self.pid, nice)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n"
                               + self.log_tail())

    def stop(self, timeout_s: float = 15.0) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Server(Background):
    """A server child process with its output in a log file, started once /healthz answers."""

    def __init__(self, name: str, args: Sequence[str], *, port: int, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(name, args, log_path=log_path, env=env)
        self.port = port

    def start(self, *, timeout_s: float = 30.0, cpus: Sequence[int] | None = None) -> Server:
        process = self.spawn(cpus)
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_running()
            if self._healthy():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer /healthz in {timeout_s}s")
            time.sleep(0.1)
        if cpus:  # again: threads started during start-up
            pin(process.pid, cpus)
        return self

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, read from /proc (Linux)."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


