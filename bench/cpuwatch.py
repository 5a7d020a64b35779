"""CPU time of watched processes, of this process and of the whole machine between two
snapshots, read from /proc (Linux). No bridge imports (the load generator uses it)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, all cores: busy is every
    process's time (user, nice, system, irq, softirq); steal is the time the hypervisor
    gave to other virtual machines while this one had work to run."""
    try:
        fields = [int(x) for x in
                  Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class ProcessCpu:
    """CPU seconds of the watched processes and of this one, between two snapshots."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    def _read(self) -> dict[str, float]:
        out = {"loadgen": time.process_time()}
        machine = machine_cpu_s()
        if machine is not None:
            out["machine"], out["steal"] = machine
        for label, pid in self.pids.items():
            seconds = self._process_cpu_s(pid)
            if seconds is not None:
                out[label] = seconds
        return out

    def _process_cpu_s(self, pid: int) -> float | None:
        """On-CPU time of all the process's threads: schedstat counts nanoseconds, where
        /proc/<pid>/stat counts clock ticks (10 ms: a short round could read 0)."""
        try:
            total_ns = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                total_ns += int((task / "schedstat").read_text().split()[0])
            return total_ns / 1e9
        except (OSError, ValueError, IndexError):
            pass
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.tick

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        self.start = self._read()

    def end(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        now = self._read()
        out = {k: round(100 * (now[k] - v) / elapsed, 1)
               for k, v in self.start.items() if k in now and elapsed > 0}
        if "machine" in out:  # what the rest of the machine used (steal apart)
            steal = out.pop("steal", 0.0)
            out["others"] = round(max(0.0, out.pop("machine") - sum(out.values())), 1)
            out["steal"] = steal
        return out
