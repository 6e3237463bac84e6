# ayrshare-connect: `make run` starts a working demo, `make test` runs the whole suite, `make help` lists every target.
# Each target has one `## ` line just above it: that line is what `make help` prints.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
# Prerequisites run in the order written: `tools` may have to install python3.11-venv before .venv can be made.
.NOTPARALLEL:
.PHONY: help tools install run test test-fast lint format bench bench-smoke soak image-test fresh-machine-test lock check-deps audit openapi clean

## List every target with one line each (also what a bare `make` does).
help:
	@awk '/^## /{doc=substr($$0, 4); next} /^[a-z][a-z-]*:/ && doc != "" {sub(/:.*/, ""); printf "  make %-19s %s\n", $$0, doc} {doc=""}' $(firstword $(MAKEFILE_LIST))

## Install the system tools the tests need (redis-server, chromium, wrk, valgrind...) when missing; else a no-op.
tools:
	@PYTHON=$(PYTHON) bash scripts/install-test-tools.sh

## Create .venv from requirements-dev.lock and install the project into it (needs only Python 3.11).
install: $(STAMP)

$(STAMP): requirements-dev.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	@test -x $(BIN)/pip || $(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "$(PYTHON) cannot make a venv \
	(no ensurepip): install $(PYTHON)-venv (sudo apt-get install $(PYTHON)-venv), or run make tools"; exit 1; }
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

## Demo with no credentials (emulator, in-process cache; SIGNED=1: signed links), or the real thing if .env has settings.
run: install
	$(BIN)/python scripts/run_local.py $(if $(SIGNED),--signed)

## Install missing tools, lint, then every test against a real redis-server (throwaway, unless REDIS_URL is set).
test: tools install lint check-deps
	$(BIN)/pytest

## Quick loop: stop at the first failure, skip the browser and container tests.
test-fast: tools install
	$(BIN)/pytest -x -q -m "not browser and not container"

## ruff check and ruff format --check, as make test runs them.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Rewrite the code with ruff format and ruff check --fix.
format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Every benchmark scenario at full size (python -m bench; results in bench/results/, see BENCHMARKS.md).
bench: tools install
	$(BIN)/python -m bench

## Every benchmark scenario at smoke size (python -m bench --quick, under a minute): the wiring, not the speed.
bench-smoke: tools install
	$(BIN)/python -m bench --quick

## Long run under the production config with injected faults (python -m bench.soak).
soak: tools install
	$(BIN)/python -m bench.soak

## Lint Dockerfile and compose file, build the image, run it with Redis and the emulator (docker, else podman).
image-test: install
	bash scripts/image-test.sh

## `make test` in a clean Debian container that starts with only Python 3.11 and make (about 15 min on two cores).
fresh-machine-test:
	bash scripts/fresh-machine-test.sh

# `make lock`: universal (every platform and Python >= 3.11, markers where they differ), so one lock serves Debian's 3.11.2 and the
# image's 3.11.x alike. The development lock is constrained to the runtime one: the tests run exactly what ships.
UV_VERSION := $(shell sed -n 's/^ *"uv==\([^"]*\)".*/\1/p' pyproject.toml)
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(LOCK_ARGS) \
	--custom-compile-command "make lock"

# It needs only uv (the version pyproject.toml pins), not the old locks installed: they may lack what pyproject.toml adds.
## Re-resolve both lock files, with hashes, from pyproject.toml (uv pip compile), then make check-deps.
lock:
	@test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)
	@$(BIN)/uv --version 2>/dev/null | grep -q "^uv $(UV_VERSION) " || $(BIN)/pip install -q "uv==$(UV_VERSION)"
	$(UV_COMPILE) -o requirements.lock pyproject.toml
	$(UV_COMPILE) --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml
	@$(MAKE) --no-print-directory check-deps

## Check every locked pin against what its dependants declare (extras too) and the venv against the locks; pip check.
check-deps: install
	$(BIN)/python scripts/check_pins.py
	$(BIN)/pip check

## pip-audit over requirements.lock, else PyPI's project JSON for latest releases; unaudited only if nothing answers.
audit: install
	$(BIN)/python scripts/audit.py requirements.lock

## Rewrite docs/openapi.json from the code (the OpenAPI description also served at /openapi.json).
openapi: install
	$(BIN)/python -m service.web.openapi

## Remove .venv, the caches and the test and demo leftovers.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .demo artifacts
