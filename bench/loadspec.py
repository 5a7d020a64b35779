"""What one load phase is asked to do (LoadSpec) and what it measured (LoadResult): the
parent (bench/loadgen.py: run_load) and the generator's process exchange them as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bench.forms import TWILIO_PATH


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    host: str = "127.0.0.1"
    port: int
    mode: Literal["closed", "open"]
    concurrency: int
    duration_s: float
    warmup_s: float = 0.0
    rate: float = 0.0  # open mode: arrivals per second
    max_requests: int  # hard bound on requests generated and sent
    timeout_s: float = 10.0  # per request
    token: str
    public_base_url: str
    path: str = TWILIO_PATH
    contacts: int = 1000  # messages come from contacts 0..contacts-1, drawn at random
    # …unless new_contacts: then request i comes from contact first_contact + i, each
    # message from a contact never seen before (every message opens a conversation).
    new_contacts: bool = False
    first_contact: int = 0
    sid_prefix: str  # 12 hex digits: makes every MessageSid of the whole run unique
    seed: int = 1
    # Processes whose CPU use is read over the measured window: label -> pid.
    watch_pids: dict[str, int] = field(default_factory=dict)
    cpus: list[int] | None = None  # pin the generator to these CPUs


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    mode: str
    offered_rate: float  # open mode; 0 for closed
    concurrency: int
    sent: int  # every request written, warm-up and drain included
    ok: int  # every 200 answer, warm-up and drain included
    statuses: dict[str, int]  # non-200 answers by status code, whole run
    failures: dict[str, int]  # no answer (timeout, connection error), whole run
    dropped: int  # open mode: scheduled but never sent (generator deadline)
    window_s: float
    window_ok: int
    window_errors: int
    rate: float  # 200 answers per second in the measured window
    latency_ms: dict[str, float]  # of 200 answers in the window
    pool_exhausted: bool
    cpu_percent: dict[str, float]  # over the window, 100 = one core
    generation_s: float

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values()) + self.dropped
