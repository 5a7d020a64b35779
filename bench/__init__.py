"""The project's own benchmarks: `make bench` (= `python -m bench`) runs them all and
rewrites docs/performance.md. See bench/report.py for the row format every benchmark
module returns, and bench/__main__.py for the list of modules."""
