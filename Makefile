# HybridPref. `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The test suite runs on PostgreSQL and Redis (started by scripts/services.sh when needed).
TEST_ENV := HYBRIDPREF_MODE=test DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hybridpref} \
	CELERY_BROKER_URL=$${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}

.PHONY: install demo test lint typecheck services bench loadtest clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "HybridPref needs Python 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 comes from the local CPU wheel (pip's find-links), never a CUDA build.
	$(BIN)/python -m pip install --quiet -e '.[ml,dev]'
	touch $@

demo: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup
	PORT=$(PORT) ./scripts/run_demo.sh

services:
	./scripts/services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install services lint typecheck
	$(TEST_ENV) $(BIN)/pytest

bench: install services
	$(TEST_ENV) $(BIN)/python bench/run.py

# 100 simulated annotators for 5 minutes with a judge run and a routing run (bench/load_test.py).
loadtest: install services
	$(TEST_ENV) $(BIN)/python bench/load_test.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
