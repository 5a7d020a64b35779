"""The benchmarks' CPU accounting: the hypervisor's steal is reported apart from the
machine's other processes, so a noisy run says what made it noisy."""

from __future__ import annotations

import os
import time

from bench.cpuwatch import ProcessCpu, machine_cpu_s
from bench.workerprocs import CpuWatch


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_machine_time_splits_busy_and_steal() -> None:
    first = machine_cpu_s()
    assert first is not None
    _spin(0.05)
    second = machine_cpu_s()
    assert second is not None
    busy_s = second[0] - first[0]
    steal_s = second[1] - first[1]
    assert busy_s > 0 and steal_s >= 0


def test_the_load_generators_watch_reports_steal_apart() -> None:
    watch = ProcessCpu({"self": os.getpid()})
    watch.begin()
    _spin(0.2)
    used = watch.end()
    assert {"loadgen", "self", "others", "steal"} <= set(used)
    assert used["self"] > 0 and used["others"] >= 0 and used["steal"] >= 0


def test_the_worker_benchmarks_watch_reports_steal_apart() -> None:
    watch = CpuWatch({"me": lambda: [os.getpid()]})
    watch.begin()
    _spin(0.2)
    _, percent, seconds = watch.end()
    assert {"me", "others", "steal"} <= set(percent)
    assert seconds["me"] > 0 and seconds["steal"] >= 0
