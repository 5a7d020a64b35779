"""The RQ worker processes under test (bench/outbound.py, bench/timers.py): started as an
operator runs them, stopped warm, and their CPU and memory read from /proc (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from bench.cpuwatch import machine_cpu_s
from bench.procs import ROOT, children_by_parent, python_module

# processes: `python -m workers --processes K`; no-fork / fork: K separate
# `python -m workers --no-fork` / `--fork` processes (for comparisons).
WorkerMode = Literal["processes", "no-fork", "fork"]


def process_tree(pids: Iterable[int]) -> list[int]:
    """These processes and their live descendants (bounded)."""
    tree = children_by_parent()
    found: list[int] = []
    todo = list(pids)
    while todo and len(found) < 2000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of these process trees: each live process's own time plus that of the
    children it reaped (a forking worker's work horses end up in its cutime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


@dataclass(frozen=True)
class Memory:
    """One process, from /proc/<pid>/smaps_rollup, in bytes. PSS splits shared pages among
    the processes mapping them (PSS summed over processes = their real footprint); USS
    (private pages) is what ending this one process would free."""

    pid: int
    rss: int
    pss: int
    uss: int


def memory(pid: int) -> Memory | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[name.strip()] = int(parts[0])
    return Memory(pid, kb.get("Rss", 0) * 1024, kb.get("Pss", 0) * 1024,
                  (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024)


class CpuWatch:
    """CPU used per labelled process group between begin() and end(), and what the rest of
    the machine used meanwhile ("others": other processes; "steal": the hypervisor's time
    for other virtual machines)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.t0 = 0.0
        self.start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out = {label: cpu_seconds(pids()) for label, pids in self.groups.items()}
        out["bench driver"] = time.process_time()
        machine = machine_cpu_s()
        if machine is not None:
            out["machine"], out["steal"] = machine
        return out

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        self.start = self._read()

    def end(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(window s, CPU % of one core per label, CPU seconds per label)."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        now = self._read()
        used = {k: max(0.0, now[k] - v) for k, v in self.start.items() if k in now}
        machine = used.pop("machine", None)
        steal = used.pop("steal", None)
        if machine is not None:
            used["others"] = max(0.0, machine - sum(used.values()))
        if steal is not None:
            used["steal"] = steal
        return elapsed, {k: 100 * v / elapsed for k, v in used.items()}, used


class Workers:
    """The worker processes under test, each in its own session; stop() is SIGTERM (warm
    shutdown) and SIGKILL of the process group if that takes too long."""

    def __init__(self, mode: WorkerMode, processes: int, env: dict[str, str], logdir: Path
                 ) -> None:
        self.mode = mode
        self.processes = processes
        self.env = env
        self.logdir = logdir
        self.popen: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._started = 0

    def start(self) -> None:
        if self.mode == "processes":
            commands = [python_module("workers", "--processes", str(self.processes))]
        else:
            flag = "--no-fork" if self.mode == "no-fork" else "--fork"
            commands = [python_module("workers", flag) for _ in range(self.processes)]
        for args in commands:
            self._started += 1
            log = (self.logdir / f"worker-{self._started}.log").open("wb")
            self._logs.append(log)
            self.popen.append(subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.popen]

    def alive(self) -> bool:
        return bool(self.popen) and all(p.poll() is None for p in self.popen)

    def worker_pids(self) -> list[int]:
        """The processes that run jobs (not the supervisor; RQ's scheduler process is a
        child of one worker)."""
        if self.mode == "processes":
            tree = children_by_parent()
            return [c for p in self.pids for c in tree.get(p, [])]
        return self.pids

    def log_tail(self, chars: int = 3000) -> str:
        logs = sorted(self.logdir.glob("worker-*.log"))[-3:]
        return "\n".join(f"--- {f.name}\n" + f.read_text(errors="replace")[-chars:]
                         for f in logs)

    def stop(self, timeout_s: float = 40.0) -> list[int | None]:
        """SIGTERM, then wait; the exit codes (None: had to be killed)."""
        codes: list[int | None] = []
        for p in self.popen:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.popen:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                for pid in process_tree([p.pid]):
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                p.wait()
                codes.append(None)
        for log in self._logs:
            log.close()
        self._logs = []
        self.popen = []
        return codes
