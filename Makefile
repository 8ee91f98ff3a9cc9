# subsync: `make demo` runs the whole product on the local Stripe simulator,
# `make test` runs every test. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help demo test lint services clean bench bench-receiver bench-pipeline bench-reconciler

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

services: ## start PostgreSQL and Redis if they do not answer (installs them if missing)
	./scripts/services.sh

demo: $(STAMP) services ## run the whole product on the local Stripe simulator and print the outcome
	$(BIN)/python scripts/demo.py

test: $(STAMP) services ## run the tests (each run uses its own database and queue namespace)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

bench: bench-receiver bench-pipeline bench-reconciler ## run every benchmark (tables on stdout, JSON lines in bench/results/)

bench-receiver: $(STAMP) services ## webhook acks: this receiver against Stripe's documented in-request handler
	$(BIN)/python -m bench.receiver $(BENCH_ARGS)

bench-pipeline: $(STAMP) services ## a burst of stored events drained by the Procfile's workers
	$(BIN)/python -m bench.pipeline $(BENCH_ARGS)

bench-reconciler: $(STAMP) services ## reconciling 100,000 subscriptions served by the simulator
	$(BIN)/python -m bench.reconciler $(BENCH_ARGS)

clean: ## remove the virtual environment
	rm -rf $(VENV)
