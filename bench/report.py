"""What every benchmark module returns, and how docs/performance.md is written from it.

The contract for a benchmark module (see bench/__main__.py for the list):

    def run(ctx: Context) -> list[Row]: ...

Each Row is one figure: its value in `unit`, optionally the same figure for a *baseline
measured in the same run* (then `ratio` = value / baseline), and optionally a Target that
decides pass/fail, either on the value ("p99 < 20 ms") or on the ratio (">= 0.30 of the
baseline"). A module may also attach free-form Markdown (tables, plots) with
`ctx.add_section(...)`; sections are printed after the main table.
"""

from __future__ import annotations

import math
import operator
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Op = Literal[">=", ">", "<=", "<", "=="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq,
}
_SHOWN = {">=": "≥", ">": ">", "<=": "≤", "<": "<", "==": "="}


@dataclass(frozen=True, kw_only=True)
class Target:
    """A pass/fail rule: `on` the absolute value or on the ratio to the baseline."""

    op: Op
    threshold: float
    on: Literal["value", "ratio"] = "value"

    def check(self, value: float, ratio: float | None) -> bool | None:
        subject = value if self.on == "value" else ratio
        if subject is None or math.isnan(subject):
            return None
        return _OPS[self.op](subject, self.threshold)

    def describe(self, unit: str) -> str:
        shown = _SHOWN[self.op]
        if self.on == "ratio":
            return f"ratio {shown} {fmt(self.threshold)}"
        return f"{shown} {fmt(self.threshold)} {unit}".rstrip()


@dataclass(frozen=True, kw_only=True)
class Row:
    """One measured figure of one benchmark."""

    bench: str  # the module: "ingest", "threads", …
    name: str  # what was measured, readable
    value: float
    unit: str
    baseline: float | None = None  # the same figure for the reference, same run
    baseline_name: str = ""  # what the reference is
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.baseline):
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None when there is no target."""
        return None if self.target is None else self.target.check(self.value, self.ratio)

    @property
    def result(self) -> str:
        return {True: "PASS", False: "FAIL", None: "—"}[self.passed]


@dataclass(frozen=True)
class Section:
    title: str
    markdown: str


@dataclass
class Context:
    """Given to every benchmark: where to put scratch files and generated documents."""

    workdir: Path  # scratch space, deleted after the run
    docs_dir: Path  # generated figures go here (linked from performance.md)
    quick: bool = False  # smaller sizes, for trying the harness out
    pin_cpus: bool = True  # pin servers and load generator to separate cores
    sections: list[Section] = field(default_factory=list)
    log: Callable[[str], None] = print

    def add_section(self, title: str, markdown: str) -> None:
        self.sections.append(Section(title, markdown))


# ----------------------------------------------------------------------- formatting


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    a = abs(x)
    if float(x).is_integer() and a < 1e9:
        return f"{int(x):,}"
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def rows_table(rows: list[Row]) -> str:
    body = []
    for r in rows:
        baseline = "—" if r.baseline is None else f"{fmt(r.baseline)} {r.unit} ({r.baseline_name})"
        body.append([
            r.bench, r.name, f"{fmt(r.value)} {r.unit}", baseline, fmt_ratio(r.ratio),
            r.target.describe(r.unit) if r.target else "—", r.result,
        ])
    return table(["Bench", "Figure", "Value", "Baseline (same run)", "Ratio", "Target",
                  "Result"], body)


def console_table(rows: list[Row]) -> str:
    out = []
    for r in rows:
        base = "" if r.baseline is None else f"  baseline {fmt(r.baseline)} ({r.baseline_name})"
        ratio = "" if r.ratio is None else f"  ratio {fmt_ratio(r.ratio)}"
        target = f"  target {r.target.describe(r.unit)}" if r.target else ""
        out.append(f"[{r.result:>4}] {r.bench:8} {r.name}: {fmt(r.value)} {r.unit}"
                   f"{base}{ratio}{target}")
    return "\n".join(out)


# ----------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict[str, str]:
    import aiohttp
    import redis

    from bridge.store.embedded import redis_server_binary

    server = _run([redis_server_binary(), "--version"]).split()
    version = next((w.removeprefix("v=") for w in server if w.startswith("v=")), "unknown")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": _run(["nproc"]) or "?",
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "redis_server": version,
        "redis_py": redis.__version__,
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
        "git": _run(["git", "rev-parse", "--short", "HEAD"]) or "?",
    }


HOW_TO_READ = """\
**How to read this.** The machines this runs on are shared and noisy, so an absolute
number here only describes this run. What is meaningful is a *ratio* between two figures
measured in the same run, on the same machine, with the same load generator: that is
what the targets of DESIGN §8 are stated in, and what the "Ratio" column shows (value ÷
baseline). Where a target is an absolute one (p99 latency, sends/s, lateness) the
baseline column still shows the reference measured alongside, so a slow machine can be
told apart from a slow bridge. Re-run `make bench` to refresh this file; do not edit it
by hand."""


def render_markdown(
    rows: list[Row],
    sections: list[Section],
    env: dict[str, str],
    *,
    command: str,
    elapsed_s: float,
    errors: list[tuple[str, str]],
    missing: list[str],
) -> str:
    failed = [r for r in rows if r.passed is False]
    parts = [
        "# Performance",
        "",
        "<!-- Generated by `make bench` (bench/__main__.py): every run rewrites this file. -->",
        "",
        f"Measured {env['date']} by `{command}` in {elapsed_s:.0f} s "
        f"(commit {env['git']}).",
        "",
        f"- Machine: {env['cpus']} CPUs (`nproc`), {env['cpu_model']}; {env['platform']}",
        f"- Python {env['python']}, redis-server {env['redis_server']} (embedded, AOF on, "
        f"appendfsync everysec), redis-py {env['redis_py']}, aiohttp {env['aiohttp']}",
        "",
        HOW_TO_READ,
        "",
        "## Results",
        "",
        rows_table(rows),
        "",
        f"{len(rows) - len(failed)} of {len(rows)} figures pass or have no target; "
        + (f"**{len(failed)} fail**: " + ", ".join(f"{r.bench}: {r.name}" for r in failed)
           if failed else "none fails") + ".",
        "",
    ]
    if errors:
        parts += ["## Benchmarks that did not finish", ""]
        parts += [f"- **{name}**: `{msg}`" for name, msg in errors]
        parts.append("")
    if missing:
        parts += [
            "## Not measured yet",
            "",
            "These DESIGN §8 targets have no benchmark module yet (bench/__main__.py lists "
            "them; a module `bench/<name>.py` with `run(ctx) -> list[Row]` is picked up):",
            "",
        ]
        parts += [f"- `bench/{name}.py`: {what}" for name, what in _missing_what(missing)]
        parts.append("")
    for s in sections:
        parts += [f"## {s.title}", "", s.markdown.strip(), ""]
    return "\n".join(parts)


PLANNED: dict[str, str] = {
    "outbound": "80 messages/s sustained against a stub Twilio answering in 150 ms",
    "timers": "a solved-to-closed automation fires within 5 s of its due time with "
              "100,000 timers pending",
}


def _missing_what(missing: list[str]) -> list[tuple[str, str]]:
    return [(m, PLANNED.get(m, "")) for m in missing]
