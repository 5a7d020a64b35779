"""HTTP load generator for the ingest benchmark, written for low overhead and run in its
own process (pinned to its own core when the machine allows) so it does not compete with
the server under test.

It speaks HTTP/1.1 over raw asyncio sockets with keep-alive: requests are pre-built bytes
(correctly signed Twilio inbound forms, a unique MessageSid each) generated *before* the
clock starts, and responses are parsed just enough to read the status and skip the body.
The same generator and the same requests are used for the bare aiohttp baseline and for
the bridge.

Two modes, both bounded in request count and in time:

- closed: `concurrency` connections each send a request as soon as the previous answer
  arrives, for `warmup_s` (not counted) then `duration_s` (counted). Measures max rate.
- open: requests are *scheduled* at a constant rate for `duration_s` (arrivals do not wait
  for answers) over a pool of `concurrency` connections; latency is measured from the
  scheduled send time, so a stalled server shows up in the latency instead of slowing the
  arrivals down (no coordinated omission).

Parent side: `run_load(spec)` starts `python -m bench.loadgen '<spec JSON>'` and returns
the parsed result.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cpuwatch import ProcessCpu
from bench.forms import build_requests
from bench.loadclient import closed_loop, open_loop
from bench.loadspec import LoadResult, LoadSpec
from bench.stats import summary_ms

__all__ = ["LoadResult", "LoadSpec", "run_async", "run_load"]

ROOT = Path(__file__).resolve().parent.parent


async def run_async(spec: LoadSpec, reqs: list[bytes], generation_s: float) -> LoadResult:
    cpu = ProcessCpu(spec.watch_pids)
    dropped = 0
    exhausted = False
    if spec.mode == "closed":
        tally, window, cpu_window, exhausted = await closed_loop(spec, reqs, cpu)
    else:
        tally, window, cpu_window, dropped = await open_loop(spec, reqs, cpu)
    return LoadResult(
        mode=spec.mode,
        offered_rate=spec.rate if spec.mode == "open" else 0.0,
        concurrency=spec.concurrency,
        sent=tally.sent,
        ok=tally.ok,
        statuses=dict(tally.statuses),
        failures=dict(tally.failures),
        dropped=dropped,
        window_s=window,
        window_ok=tally.window_ok,
        window_errors=tally.window_errors + (dropped if spec.mode == "open" else 0),
        rate=tally.window_ok / window,
        latency_ms=summary_ms(tally.latencies),
        pool_exhausted=exhausted,
        cpu_percent=cpu_window,
        generation_s=generation_s,
    )


def main(argv: list[str]) -> int:
    spec = LoadSpec(**json.loads(argv[1]))
    if spec.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec.cpus)
    t0 = time.perf_counter()
    reqs = build_requests(spec)
    generation_s = time.perf_counter() - t0
    result = asyncio.run(run_async(spec, reqs, generation_s))
    print(json.dumps(asdict(result)), flush=True)
    return 0


# ----------------------------------------------------------------------- parent side


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one load phase in a child process and return its result (bounded in time)."""
    # Generation costs ~60 µs a request on this class of machine; leave room for it.
    budget = (30 + spec.max_requests * 2e-4 + spec.warmup_s + spec.duration_s
              + 2 * spec.timeout_s)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(asdict(spec))],
        cwd=ROOT, capture_output=True, text=True, timeout=budget, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return LoadResult(**data)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
