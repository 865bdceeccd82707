# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MLXD_HOME ?= $(CURDIR)/.mlxd-demo
# The suite's workers (pytest-xdist): 2 by default, the cores of the smallest machine it runs on.
TEST_WORKERS ?= 2

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mlxd demo

test: $(STAMP)
	unset MLXD_HOME; $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check mlxd tests benchmarks
	$(VENV)/bin/ruff format --check mlxd tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format mlxd tests benchmarks
	$(VENV)/bin/ruff check --fix mlxd tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .mlxd-demo .pytest_cache
