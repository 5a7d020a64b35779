"""Redis's append-only file rewrites, moved between the measured phases of a benchmark.

Redis rewrites its AOF once the file has doubled since the last rewrite (64 MB at least):
it forks, and the child writes the whole dataset out. On the bench's machines the child
shares a CPU with Redis and the load generator, and under a max-rate load the file
doubles every few phases, so whether a 4 s round held a rewrite was chance. Measured in
one ingest run, six alternating rounds: the two appends rounds that held one (the child
took 10% and 26% of a core) gave ratios of 0.36 and 0.30, the others 0.37-0.42. The
tail rounds showed the same: a new-conversation p99 of 20.1 ms in the round with a
rewrite against 9.7 and 10.2 ms in the two without (docs/performance.md, 2026-12-05).

So while the benchmark runs, Redis's automatic rewrite is off, and the benchmark applies
Redis's own rule itself between phases (`between_phases`), waiting for the rewrite to
finish. The file still never grows past twice its rewritten size plus one phase's
writes; what the bench's figures leave out is the rewrite's CPU, reported apart
(`rewrites_s`). In production Redis runs on a host of its own, where the child takes
another core.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

import redis

_PERCENTAGE = "auto-aof-rewrite-percentage"
_MIN_SIZE = "auto-aof-rewrite-min-size"


class RewritesBetweenPhases:
    """`with RewritesBetweenPhases(url) as aof:` ... `aof.between_phases()` before each
    measured phase. Restores Redis's setting on exit."""

    def __init__(self, url: str, *, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.rewrites_s: list[float] = []  # each rewrite this made, start to finish
        self._client = redis.Redis.from_url(url)
        self._percentage = 0
        self._min_size = 0
        self._forks_at_start = 0

    def __enter__(self) -> Self:
        config = self._client.config_get("auto-aof-rewrite-*")
        self._percentage, self._min_size = int(config[_PERCENTAGE]), int(config[_MIN_SIZE])
        self._client.config_set(_PERCENTAGE, 0)
        self._wait_idle()  # a rewrite Redis began on its own before now
        self._forks_at_start = self._forks()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._client.config_set(_PERCENTAGE, self._percentage)
        except redis.RedisError:
            pass  # Redis already stopped: nothing left to restore
        finally:
            self._client.close()

    def due(self) -> bool:
        """Redis's own rule: the file has grown by `auto-aof-rewrite-percentage` since the
        last rewrite, and is at least `auto-aof-rewrite-min-size`."""
        info = self._client.info("persistence")
        if not info.get("aof_enabled") or not self._percentage:
            return False
        current, base = int(info["aof_current_size"]), int(info["aof_base_size"])
        return current >= self._min_size and current >= base * (100 + self._percentage) / 100

    def between_phases(self) -> float | None:
        """Rewrite now if Redis would have; the rewrite's seconds, None when not due."""
        if not self.due():
            return None
        started = time.monotonic()
        self._client.bgrewriteaof()
        self._wait_idle()
        elapsed = time.monotonic() - started
        self.rewrites_s.append(elapsed)
        return elapsed

    def forks_in_phases(self) -> int:
        """Forks since entry that were not this object's rewrites (0 when every rewrite
        fell between phases)."""
        return self._forks() - self._forks_at_start - len(self.rewrites_s)

    def _forks(self) -> int:
        return int(self._client.info("stats")["total_forks"])

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            info = self._client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get(
                    "aof_rewrite_scheduled"):
                if info.get("aof_last_bgrewrite_status", "ok") != "ok":
                    raise RuntimeError("Redis failed to rewrite its append-only file")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis's AOF rewrite took over {self.timeout_s:g} s")
            time.sleep(0.05)
