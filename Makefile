# Shelfwise — `make run` and `make test` work on a fresh machine with only python3.
PYTHON ?= python3
# Use uv from PATH when present; otherwise bootstrap it with pip into .tools/.
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
VENV := .venv
# Benchmarks run on an environment of their own, built with BENCH_PYTHON. Point it at an
# optimized CPython (PGO + LTO), as the image's python:3.11-slim is; on Debian that is
# /usr/bin/python3.11 (docs/decisions/0050-benchmarks-on-an-optimized-interpreter.md).
BENCH_PYTHON ?= $(PYTHON)
BENCH_VENV := .venv-bench
# Two workers: the suite is I/O-bound on PostgreSQL, and each test has its own database.
PYTEST_ARGS ?= -n 2

.PHONY: install run cluster test lint fmt bench clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/shelfwise run

# The production shape on one machine: pgbouncer, redis-server, 3 API instances, 2 workers
# and nginx on :8080/:8443 (docs/deploy.md). Extra options: make cluster CLUSTER_ARGS="--apis 2"
cluster: install
	$(VENV)/bin/shelfwise cluster $(CLUSTER_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench migrations
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # layer contracts: [tool.importlinter] in pyproject.toml

test: install lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

fmt: install
	$(VENV)/bin/ruff format src tests bench migrations
	$(VENV)/bin/ruff check --fix src tests bench migrations

# uv sync every time: quick when nothing changed, and it rebuilds the environment when
# BENCH_PYTHON names another interpreter.
bench: | $(UV)
	UV_PROJECT_ENVIRONMENT=$(BENCH_VENV) $(UV) sync --frozen --python $(BENCH_PYTHON)
	$(BENCH_VENV)/bin/python -m bench.run

clean:
	rm -rf $(VENV) $(BENCH_VENV) .tools .pytest_cache .mypy_cache .ruff_cache
