# wearbus: `make up` runs the local stack, `make test` runs every check. Both set themselves up first.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.wearbus-installed
ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist: two workers more than the cores (the tests wait on brokers and processes much of the time: on 2 quiet
# cores pytest takes ~500 s on 2 workers, ~335 s on 3 with the CPU ~60% busy, ~275 s on 4 with it ~80% busy); the
# tests of one xdist_group (the cluster failovers; the tests of one `wearbus up` day) share a worker.
# WB_PYTEST_WORKERS=auto is one per core, WB_PYTEST_WORKERS=0 runs everything in one process.
CORES := $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
WB_PYTEST_WORKERS ?= $(shell echo $$(( $(CORES) + 2 )))
XDIST := $(if $(filter 0,$(WB_PYTEST_WORKERS)),-p no:xdist,-n $(WB_PYTEST_WORKERS) --dist loadgroup)

.PHONY: help setup up test lint typecheck pytest bench system-deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "wearbus needs Python 3.11 or newer (python3.11 -m venv must work)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	@# Bytecode for every module, once and on both cores: where PYTHONDONTWRITEBYTECODE is set (CI images often do)
	@# each of the hundreds of processes the tests start would compile it again (wearbus agent: 1.8 -> 1.3 s).
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib agent broker cli devices schemas bench console testkit >/dev/null
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install wearbus with its test tools

system-deps: ## install mosquitto, nats-server, redis-server and the browser for the console test when CI=true or WB_SYSTEM_DEPS=1 and they are missing
	@if [ "$${CI:-}" = "true" ] || [ "$${WB_SYSTEM_DEPS:-}" = "1" ]; then \
		need=""; command -v mosquitto >/dev/null || need="$$need mosquitto mosquitto-clients"; \
		command -v chromium >/dev/null && command -v chromedriver >/dev/null || need="$$need chromium chromium-driver"; \
		command -v nats-server >/dev/null || need="$$need nats-server"; \
		command -v redis-server >/dev/null || need="$$need redis-server"; \
		if [ -n "$$need" ]; then echo "installing$$need"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need) >/dev/null; fi; \
	fi

up: setup ## run the local stack: embedded broker, agent, four emulators and the day-in-the-life scenario
	$(BIN)/wearbus up $(ARGS)

lint: setup ## ruff (lint and format check) and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup ## mypy --strict
	$(BIN)/mypy

pytest: setup system-deps ## the test suite (unit, contract against both brokers, end to end)
	@$(BIN)/pytest $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

test: lint typecheck pytest ## everything CI runs: lint, types, tests

bench: setup ## the benchmark (quick form); ARGS='--full' for the long one
	$(BIN)/wearbus bench $(ARGS)

clean: ## remove the venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
