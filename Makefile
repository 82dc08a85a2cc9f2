# The two set-up commands (see README):
#   make demo   create .venv, install pinned dependencies, run the embedded default (ray-t2t run)
#   make test   create .venv, install pinned dependencies, run the tests
# Other targets: make lint (ruff check + ruff format --check), make install, make bench (every benchmark against its baseline, < 15 min on 2 cores;
# writes benchmarks/results.json), make clean.
#
# requirements.lock pins every package; torch==2.13.0 is the CPU build where pip finds one (as on
# our CPU machines). Elsewhere, on a CPU-only machine, add the CPU wheel index to skip the CUDA build:
#   make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP_EXTRA ?=
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install demo test lint bench clean

# -qq: errors only (this keeps pip's warnings about unreachable index locations out of the demo's output);
# PYTHONWARNINGS: setuptools warns of every editable install, in a box of its own
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq $(PIP_EXTRA) -r requirements.lock
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -qq --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/ray-t2t run $(CONFIG)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) ray_t2t_runs .pytest_cache *.egg-info
