# make run: install, migrate, and run the API, the outbox relay and the consumers in the foreground.
# make test: lint (ruff, mypy) and every test against the local PostgreSQL and RabbitMQ.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
PY := $(UV) run --frozen
export UV_PROJECT_ENVIRONMENT ?= .venv

.PHONY: install run migrate api relay consumers lint test unit integration bench mutants clean

install:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

migrate: install
	$(PY) python -m service migrate

# One foreground command: Ctrl-C (or a dying process) stops them all.
run: migrate
	@$(PY) python -m service api & pids=$$!; \
	$(PY) python -m service relay & pids="$$pids $$!"; \
	$(PY) python -m consumers run all & pids="$$pids $$!"; \
	trap 'trap - EXIT INT TERM; kill $$pids 2>/dev/null; wait' EXIT INT TERM; \
	wait -n

api: install
	$(PY) python -m service api

relay: install
	$(PY) python -m service relay

consumers: install
	$(PY) python -m consumers run all

lint: install
	$(PY) ruff check .
	$(PY) ruff format --check .
	$(PY) mypy service consumers tests bench

test: lint
	$(PY) pytest

unit: install
	$(PY) pytest tests/unit

# Curated mutations of the code that holds each guarantee; fails if a test does not notice.
mutants: install
	$(PY) python -m tests.mutants

# Every benchmark of docs/PERFORMANCE.md in one run (needs wrk: apt-get install -y wrk).
bench: install
	$(PY) python -m bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
