# subsync: `make demo` runs the whole product on the local Stripe simulator,
# `make test` runs every test. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: help demo test unit lint services clean bench bench-quick bench-receiver bench-e2e bench-pipeline bench-reconciler bench-servers

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install -q -r bench/requirements.txt
	touch $(BENCH_STAMP)

services: ## start PostgreSQL and Redis if they do not answer (installs them if missing)
	./scripts/services.sh

demo: $(STAMP) services ## run the whole product on the local Stripe simulator and print the outcome
	$(BIN)/python scripts/demo.py

test: $(STAMP) services ## lint, types, then every test (each run uses its own database and queue namespace)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP) ## the unit layer only: pure rules, no PostgreSQL or Redis, a few seconds
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint and format) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

BENCHES := bench-receiver bench-e2e bench-pipeline bench-reconciler bench-servers

# Every bench runs even when one misses a target; the exit status says whether all were met.
bench: ## run every benchmark (tables on stdout, JSON lines in bench/results/); BENCH_ARGS=--quick for smoke runs
	@status=0; for b in $(BENCHES); do $(MAKE) --no-print-directory $$b || status=1; done; exit $$status

bench-quick: ## every benchmark in its --quick smoke mode
	@$(MAKE) --no-print-directory bench BENCH_ARGS=--quick

bench-receiver: $(STAMP) services ## webhook acks: ours against a minimal durable receiver, stripe-sync-engine (node), Stripe's in-request handler, the floor
	$(BIN)/python -m bench.receiver $(BENCH_ARGS)

bench-e2e: $(STAMP) services ## a burst received and applied: web + worker against stripe-sync-engine's apply in the request
	$(BIN)/python -m bench.e2e $(BENCH_ARGS)

bench-pipeline: $(STAMP) services ## a burst of stored events drained by the Procfile's workers
	$(BIN)/python -m bench.pipeline $(BENCH_ARGS)

bench-reconciler: $(STAMP) services ## reconciling 100,000 subscriptions served by the simulator
	$(BIN)/python -m bench.reconciler $(BENCH_ARGS)

bench-servers: $(BENCH_STAMP) services ## web servers side by side: floor, receiver load, deliveries beside slow clients
	$(BIN)/python -m bench.servers $(BENCH_ARGS)

clean: ## remove the virtual environment
	rm -rf $(VENV)
