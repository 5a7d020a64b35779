# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-installs when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

## Start the whole bridge (embedded Redis unless REDIS_URL, web, worker with scheduler).
run: $(VENV)/.installed-run
	$(BIN)/bridge run

## Install and run the full test suite, then the linters. The suite runs on two processes
## (pytest-xdist), each with a Redis of its own (tests/conftest.py: redis_url). The fault
## scenarios run side by side: most of their time is spent
## waiting out RQ's fixed timeouts (a dead worker's job, the scheduler lock, a job stuck
## between queue and worker), not on the CPU.
test: $(VENV)/.installed-test
	$(BIN)/pytest -n 2 --ignore=tests/faults
	$(BIN)/pytest -n 4 tests/faults
	$(BIN)/ruff check bridge workers config tests bench
	$(BIN)/mypy

lint: $(VENV)/.installed-test
	$(BIN)/ruff check bridge workers config tests bench
	$(BIN)/mypy

## Run every benchmark and rewrite docs/performance.md.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
