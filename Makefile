# Fresh machine: `make demo` (install + evaluation report of the main reference model) or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, pinned, so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/reasonlens demo --out out/demo --overwrite

test: setup
	$(BIN)/ruff check reasonlens tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/ruff check reasonlens tests benchmarks
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/decoding.py

clean:
	rm -rf $(VENV) out
