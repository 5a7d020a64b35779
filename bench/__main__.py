"""`make bench` = `python -m bench`: run every benchmark, print the figures, and rewrite
docs/performance.md (and the figures it links) from this one run.

Adding a benchmark: write `bench/<name>.py` with `run(ctx: Context) -> list[Row]` (see
bench/report.py) and list it in BENCHMARKS below. Names listed but not written yet are
reported under "Not measured yet" instead of failing the run.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import cast

from bench.report import Context, Row, console_table, environment, render_markdown

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
COMMAND = "make bench"

# In this order. outbound (stub Twilio answering in 150 ms, target 80 sends/s) and timers
# (100,000 pending timers, target: fires < 5 s late) are other engineers' modules.
BENCHMARKS: tuple[str, ...] = ("ingest", "relay", "threads", "memory", "outbound", "timers",
                               "render_isolation", "export", "reports", "views",
                               "widget")

RunFn = Callable[[Context], list[Row]]


def load(name: str) -> RunFn | None:
    """The module's run(), or None when bench/<name>.py does not exist yet."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None
        raise
    return cast(RunFn, module.run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, to try the harness (does not write the doc)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the doc")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--strict", action="store_true",
                        help="exit non-zero when a figure misses its target")
    args = parser.parse_args(argv)

    names = [n for n in BENCHMARKS if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    write = not (args.quick or args.no_write or args.only)
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    docs_dir = DOC.parent if write else workdir / "docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(workdir=workdir, docs_dir=docs_dir, quick=args.quick,
                  pin_cpus=not args.no_pin, log=lambda m: print(m, flush=True))
    rows: list[Row] = []
    errors: list[tuple[str, str]] = []
    missing: list[str] = []
    started = time.monotonic()
    env = environment()
    print(f"bench: {env['cpus']} CPUs, {env['cpu_model']}, Python {env['python']}, "
          f"redis-server {env['redis_server']}; scratch {workdir}", flush=True)
    try:
        for name in names:
            run = load(name)
            if run is None:
                missing.append(name)
                print(f"{name}: no bench/{name}.py yet, skipped", flush=True)
                continue
            t0 = time.monotonic()
            print(f"{name}: running", flush=True)
            try:
                new = run(ctx)
            except Exception as exc:  # report it, run the others, fail at the end
                traceback.print_exc()
                errors.append((name, f"{type(exc).__name__}: {exc}"))
                continue
            rows += new
            print(console_table(new), flush=True)
            print(f"{name}: {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    if write:
        DOC.write_text(render_markdown(rows, ctx.sections, env, command=COMMAND,
                                       elapsed_s=elapsed, errors=errors, missing=missing))
        print(f"wrote {DOC.relative_to(ROOT)}")
    failed = [r for r in rows if r.passed is False]
    print(f"bench: {len(rows)} figures in {elapsed:.0f} s; {len(failed)} below target; "
          f"{len(errors)} benchmark(s) failed to run")
    # Missing a target is a finding recorded in the doc, not a harness failure (unless
    # --strict); a benchmark that could not run is.
    return 1 if errors or (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
