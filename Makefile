# ayrshare-connect: `make run` starts a working demo, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint format bench bench-smoke soak image-test lock clean

install: $(STAMP)

$(STAMP): requirements-dev.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

## Demo with no credentials (emulator + in-process cache), or the real thing when .env has settings.
run: install
	$(BIN)/python scripts/run_local.py

## Lint, format check, then every test against a real redis-server (throwaway, unless REDIS_URL is set).
test: install lint
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -x -q -m "not browser and not container"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

soak: install
	$(BIN)/python -m bench.soak

image-test: install
	bash scripts/image-test.sh

## Re-resolve the pinned lock files from pyproject.toml.
lock: install
	$(BIN)/pip install -q --dry-run --ignore-installed --report /tmp/ayr-rt.json . >/dev/null
	$(BIN)/pip install -q --dry-run --ignore-installed --report /tmp/ayr-dev.json '.[dev]' >/dev/null
	$(BIN)/python scripts/write_locks.py /tmp/ayr-rt.json /tmp/ayr-dev.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .demo artifacts
