# Two commands for a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.samfast-installed

.PHONY: install demo test lint bench clean

# pip takes torch 2.14.1 / torchvision 0.29.1 from the machine's local wheel store when it has one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/samfast info
	$(BIN)/samfast bench brats --out runs/demo-bench-brats

test: $(STAMP)
	$(BIN)/ruff check samfast tests bench
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pytest bench/ --benchmark-only --benchmark-json=bench/results/latest.json
	$(BIN)/python bench/compare.py bench/results/latest.json

clean:
	rm -rf runs .pytest_cache .ruff_cache engines/*/
