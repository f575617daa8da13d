# The two set-up commands of the README: `make demo` and `make test`.
# Both work on a fresh machine: they create .venv, install torch (CPU build) first,
# the project editable with its dev tools, the system packages and the Go test-bed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := redis-server stress-ng ipmitool prometheus
PYTEST_ARGS ?=

.PHONY: demo test test-fast install system gosvc lint typecheck pytest clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A pinned torch takes the CPU build from local disk; an unpinned one pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed system gosvc

system:
	@missing=""; for b in redis-server stress-ng ipmitool promtool prometheus; do command -v $$b >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); \
	fi

gosvc: $(VENV)/.installed
	PYTHON=$(PY) bash deploy/gosvc/build.sh

demo: install
	$(BIN)/rlctl demo --out out/demo

# ruff, then the layers of docs/architecture.md as import contracts (.importlinter, import-linter).
lint: $(VENV)/.installed
	$(BIN)/ruff check rlctl envs policies chaos tests
	$(BIN)/ruff format --check rlctl envs policies chaos tests
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed
	$(BIN)/mypy rlctl envs policies chaos

pytest: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: install lint typecheck pytest

# The tests that start nothing real (no redis-server, gosvc, Ray, stress-ng, promtool, no host
# cgroups, no rlctl subprocess) and are not slow; markers in tests/conftest.py. Under two minutes.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -q -m "not real and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out runs deploy/gosvc/bin
