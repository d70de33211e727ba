# Two entry points (see README): `make demo` runs the main job, `make test` the tests.
# Each creates .venv when missing, installs torch==2.13.0 (CPU) first when torch is not
# importable, then the package with its extras, then does its job.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2
# Spinning OpenMP threads stall every torch call when the cores are shared.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lint bench clean

setup:
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	@$(PY) -m pip install -q -e ".[dev]"

demo: setup
	$(VENV)/bin/sslwatch demo --out demo-out

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache
